//! `barge serve --storage` and `--catalog`: where the files live. The shared folder (`--root`)
//! by default; with `--storage s3://BUCKET/PREFIX` an S3 bucket, with the names in a catalog
//! (`--catalog sqlite://PATH`, by default `catalog.db` in `--state-dir`, or
//! `--catalog postgres://...` for several servers). It owns these flags and the credentials
//! file check; not the backends themselves (`barge::store`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use barge::store::{Store, StoreConfig};

/// Options of `barge serve` that choose the storage.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct StorageArgs {
    /// Keep the files in an S3 bucket (s3://BUCKET/PREFIX) instead of the --root folder;
    /// needs --state-dir
    #[arg(long, value_name = "URL", env = "BARGE_STORAGE")]
    pub(crate) storage: Option<String>,
    /// The catalog of names for --storage: sqlite://PATH (default: catalog.db in
    /// --state-dir) or postgres://USER@HOST/DB (shared by several servers)
    #[arg(long, value_name = "URL", env = "BARGE_CATALOG", requires = "storage")]
    catalog: Option<String>,
    /// The S3 endpoint URL (e.g. http://127.0.0.1:3900); default: AWS
    #[arg(long, value_name = "URL", requires = "storage")]
    s3_endpoint: Option<String>,
    /// The S3 region
    #[arg(long, value_name = "REGION", default_value = "us-east-1")]
    s3_region: String,
    /// A file with the S3 credentials (aws_access_key_id = ..., aws_secret_access_key = ...,
    /// as in ~/.aws/credentials); it must not be readable by others. Default: the
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY variables
    #[arg(long, value_name = "FILE", requires = "storage")]
    s3_credentials: Option<PathBuf>,
    /// The most bytes the files in --storage may hold in all (suffixes K, M, G, T, P)
    #[arg(long, value_name = "SIZE", default_value = "1P", value_parser = super::serve::parse_bytes)]
    storage_quota: u64,
    /// How old a blob no file points to must be before it is removed, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    sweep_grace: u64,
    /// Seconds between two sweeps for blobs no file points to
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    sweep_every: u64,
}

impl StorageArgs {
    /// True when the files live in an object store (no shared folder).
    pub(crate) fn is_object(&self) -> bool {
        self.storage.is_some()
    }
}

/// Opens the store the flags name; returns it and how to show where it is.
pub(crate) async fn open(
    args: &StorageArgs,
    root: &Path,
    state_dir: &Path,
    config: StoreConfig,
) -> anyhow::Result<(Arc<Store>, String)> {
    let Some(url) = &args.storage else {
        let store = Store::open(root, config)
            .with_context(|| format!("opening the shared folder `{}`", root.display()))?;
        let shown = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
        return Ok((store, shown.display().to_string()));
    };
    open_object(args, url, state_dir, config).await
}

#[cfg(feature = "s3")]
async fn open_object(
    args: &StorageArgs,
    url: &str,
    state_dir: &Path,
    config: StoreConfig,
) -> anyhow::Result<(Arc<Store>, String)> {
    use barge::store::catalog::SqlCatalog;
    use barge::store::object::{ObjectBackend, S3Location, SweepConfig};

    let (bucket, prefix) = S3Location::parse_url(url).map_err(anyhow::Error::msg)?;
    let (access_key_id, secret_access_key, session_token) = credentials(args)?;
    let location = S3Location {
        bucket,
        prefix,
        endpoint: args.s3_endpoint.clone().unwrap_or_default(),
        region: args.s3_region.clone(),
        access_key_id,
        secret_access_key,
        session_token,
    };
    let op = location.operator().context("setting up the S3 client")?;
    let catalog_url = match &args.catalog {
        Some(c) => c.clone(),
        None => format!("sqlite://{}", state_dir.join("catalog.db").display()),
    };
    let catalog = SqlCatalog::connect(&catalog_url)
        .await
        .with_context(|| format!("opening the catalog {}", redact(&catalog_url)))?;
    let sweep = SweepConfig {
        every: (args.sweep_every > 0).then(|| std::time::Duration::from_secs(args.sweep_every)),
        grace: std::time::Duration::from_secs(args.sweep_grace),
        ..SweepConfig::default()
    };
    let backend = ObjectBackend::open(op, Arc::new(catalog), args.storage_quota, sweep)
        .await
        .context("opening the S3 store")?;
    // Reach the bucket now, so a wrong endpoint or key fails at start, not at the first upload.
    backend
        .operator()
        .list_with("blobs/")
        .limit(1)
        .await
        .with_context(|| format!("reading the bucket {url}"))?;
    Ok((
        Store::new(backend, config),
        format!("{url} (catalog {})", redact(&catalog_url)),
    ))
}

#[cfg(not(feature = "s3"))]
async fn open_object(
    _: &StorageArgs,
    _: &str,
    _: &Path,
    _: StoreConfig,
) -> anyhow::Result<(Arc<Store>, String)> {
    anyhow::bail!("this barge was built without the `s3` feature")
}

/// A database URL without its password.
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user_pass = &url[scheme + 3..at];
            let user = user_pass.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The access key, secret and session token: from `--s3-credentials` (refused if others can
/// read it) or the `AWS_*` variables.
#[cfg(feature = "s3")]
fn credentials(args: &StorageArgs) -> anyhow::Result<(String, String, Option<String>)> {
    let Some(path) = &args.s3_credentials else {
        let key = std::env::var("AWS_ACCESS_KEY_ID")
            .context("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --s3-credentials FILE")?;
        let secret =
            std::env::var("AWS_SECRET_ACCESS_KEY").context("AWS_SECRET_ACCESS_KEY is not set")?;
        return Ok((key, secret, std::env::var("AWS_SESSION_TOKEN").ok()));
    };
    read_credentials(path)
}

/// Reads an AWS-style credentials file: the `[default]` section (or the keys before any
/// section). Refuses a file that others than its owner's group can read.
#[cfg(feature = "s3")]
fn read_credentials(path: &Path) -> anyhow::Result<(String, String, Option<String>)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading the S3 credentials file `{}`", path.display()))?;
    if meta.mode() & 0o004 != 0 {
        anyhow::bail!(
            "the S3 credentials file `{}` is readable by everyone: chmod 600 it first",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the S3 credentials file `{}`", path.display()))?;
    let (mut key, mut secret, mut token) = (None, None, None);
    let mut section = "default".to_owned();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        if section != "default" {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => key = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            _ => {}
        }
    }
    let missing = |what: &str| {
        anyhow::anyhow!(
            "the S3 credentials file `{}` has no {what} in [default]",
            path.display()
        )
    };
    Ok((
        key.ok_or_else(|| missing("aws_access_key_id"))?,
        secret.ok_or_else(|| missing("aws_secret_access_key"))?,
        token,
    ))
}

#[cfg(all(test, feature = "s3"))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn credentials_files_readable_by_everyone_are_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("creds");
        std::fs::write(
            &file,
            "[other]\naws_access_key_id = no\n[default]\naws_access_key_id = AK\n\
             aws_secret_access_key = SK\n",
        )?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        let err = read_credentials(&file).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("readable by everyone")));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        let (k, s, t) = read_credentials(&file)?;
        assert_eq!((k.as_str(), s.as_str(), t), ("AK", "SK", None));
        Ok(())
    }

    #[test]
    fn passwords_are_left_out_of_catalog_urls() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/barge"),
            "postgres://u@db:5432/barge"
        );
        assert_eq!(redact("sqlite:///x/catalog.db"), "sqlite:///x/catalog.db");
    }
}
