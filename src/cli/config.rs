//! `barge serve --config FILE`: a TOML file whose keys mirror `barge serve`'s flags, for
//! servers started by systemd.
//!
//! The file is turned into the flags it stands for, placed right after `serve`, so the one
//! clap definition checks every value and a flag given on the command line wins (it comes
//! later). It owns the list of keys and that translation; not the meaning of any option.

use std::ffi::OsString;
use std::path::Path;

use anyhow::Context as _;

/// Keys a config file may hold: every `barge serve` option but `--config` and
/// `--show-identity`, plus the global `host`, `port`, `plain` and `debug`.
const KEYS: &[&str] = &[
    "host",
    "port",
    "plain",
    "debug",
    "root",
    "state-dir",
    "storage",
    "catalog",
    "s3-endpoint",
    "s3-region",
    "s3-credentials",
    "sweep-grace",
    "storage-quota",
    "sweep-every",
    "read-only",
    "public",
    "pair",
    "perm",
    "folder",
    "drop-box",
    "max-connections",
    "max-connections-per-ip",
    "web-max-connections",
    "web-max-connections-per-ip",
    "min-rate",
    "idle-timeout",
    "max-file-size",
    "min-free-space",
    "web",
    "metrics",
    "log-format",
    "qr-token",
];

/// `args` with the flags of the `--config` file after `serve` inserted, if `serve` has one.
///
/// # Errors
/// The file cannot be read, is not TOML, or has an unknown key or a value of the wrong kind.
pub(crate) fn expand(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let Some(serve) = args.iter().position(|a| a == "serve") else {
        return Ok(args);
    };
    let mut file = None;
    for (i, a) in args.iter().enumerate().skip(serve + 1) {
        let Some(a) = a.to_str() else { continue };
        if a == "--" {
            break;
        }
        if a == "--config" {
            file = args.get(i + 1).cloned();
        } else if let Some(f) = a.strip_prefix("--config=") {
            file = Some(f.into());
        }
    }
    let Some(file) = file else {
        return Ok(args);
    };
    // A flag given twice is an error to clap: one on the command line makes the file's moot.
    let given = |flag: &OsString| {
        let prefix = format!("{}=", flag.to_string_lossy());
        args.iter()
            .any(|a| a == flag || a.to_str().is_some_and(|a| a.starts_with(&prefix)))
    };
    let flags: Vec<OsString> = flags(Path::new(&file))?
        .into_iter()
        .filter(|group| !given(&group[0]))
        .flatten()
        .collect();
    let mut out = args;
    out.splice(serve + 1..serve + 1, flags);
    Ok(out)
}

/// The flags a config file stands for, one group (a flag and its value, if any) per key.
fn flags(path: &Path) -> anyhow::Result<Vec<Vec<OsString>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file `{}`", path.display()))?;
    parse(&text).with_context(|| format!("in the config file `{}`", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Vec<Vec<OsString>>> {
    let table: toml::Table = text.parse()?;
    let mut out = Vec::new();
    for (key, value) in table {
        let key = key.replace('_', "-");
        if !KEYS.contains(&key.as_str()) {
            anyhow::bail!("unknown key `{key}` (known: {})", KEYS.join(", "));
        }
        let flag = format!("--{key}");
        match value {
            toml::Value::Boolean(true) => out.push(vec![flag.into()]),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => out.push(vec![flag.into(), s.into()]),
            toml::Value::Integer(n) => out.push(vec![flag.into(), n.to_string().into()]),
            toml::Value::Array(items) if key == "perm" => {
                let words: Vec<String> = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .context("`perm` is a list of words such as [\"get\", \"put\"]")?;
                out.push(vec![flag.into(), words.join(",").into()]);
            }
            other => anyhow::bail!("`{key}` cannot be {}", other.type_str()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[OsString]) -> Vec<&str> {
        v.iter().filter_map(|s| s.to_str()).collect()
    }

    #[test]
    fn keys_become_flags() -> anyhow::Result<()> {
        let got = parse(
            "root = \"/srv/share\"\nport = 7000\nread_only = true\npublic = false\n\
             perm = [\"get\", \"put\"]\n",
        )?;
        let got: Vec<OsString> = got.into_iter().flatten().collect();
        let got = strings(&got);
        for want in ["--root", "/srv/share", "--port", "7000", "--read-only"] {
            assert!(got.contains(&want), "{got:?}");
        }
        assert!(!got.contains(&"--public"), "false is left out: {got:?}");
        assert!(got.contains(&"get,put"), "{got:?}");
        Ok(())
    }

    #[test]
    fn unknown_keys_and_kinds_are_refused() {
        assert!(parse("rot = \"x\"").is_err());
        assert!(parse("port = 1.5").is_err());
        assert!(parse("not toml").is_err());
    }

    #[test]
    fn the_file_goes_right_after_serve() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("barge.toml");
        std::fs::write(
            &file,
            "root = \"r\"\nread-only = true\npublic = true\nport = 1\n",
        )?;
        let path = file.to_str().unwrap_or("");
        let args: Vec<OsString> = ["barge", "--port=2", "serve", "--public", "--config", path]
            .map(OsString::from)
            .to_vec();
        let got = expand(args)?;
        let got = strings(&got);
        assert_eq!(got[..3], ["barge", "--port=2", "serve"]);
        assert_eq!(got[got.len() - 3..], ["--public", "--config", path]);
        let mut inserted = got[3..got.len() - 3].to_vec();
        inserted.sort_unstable();
        // The file's flags already given on the command line are left out.
        assert_eq!(inserted, ["--read-only", "--root", "r"]);
        Ok(())
    }
}
