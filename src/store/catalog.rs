//! The catalog: the namespace of a store whose bytes live elsewhere (an object store). It maps
//! each name to its blob (an immutable object under a random key), size, id, times and
//! uploader, and it alone decides which name exists.
//!
//! Every change is one database transaction, and every rule that two servers sharing the catalog
//! could race on is a unique constraint, never a read-then-write:
//! - `paths` holds one row per name and per folder of a name (`kind` `f` or `d`, keyed by the
//!   exact bytes): a file `a` and a folder `a/` are the same key, so they cannot both exist;
//!   claiming a folder is an upsert that only succeeds on a folder row.
//! - `files.canon` (the name's NFC form) is unique, so two names that differ only by Unicode
//!   normalisation cannot both exist (`PROTOCOL.md` section 4; only whole names compare).
//! - `pending` holds the blob of each upload in progress. A commit consumes its row; the orphan
//!   sweep only deletes a blob that has neither a `files` row nor a live `pending` row, so a blob
//!   a row points to is never swept (see [`Catalog::claim_orphan`]).
//!
//! One code path for SQLite (one node, embedded) and PostgreSQL (several nodes): sqlx's `Any`
//! driver, with portable SQL (`$n` parameters, `ON CONFLICT`, `RETURNING`). Only the table
//! definitions differ (PostgreSQL compares the names with the "C" collation, byte for byte).
//! What this does not do: keep bytes, or apply the protocol's policy ([`super::Store`] does).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

use super::StoreError;
use crate::id::FileId;
use crate::name::FileName;

/// One file as the catalog knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Its name.
    pub name: FileName,
    /// The key of its blob in the object store.
    pub blob: String,
    /// Its size in bytes.
    pub size: u64,
    /// The MD5 of its content.
    pub id: FileId,
    /// When it was uploaded, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// When it was last renamed (or uploaded), in milliseconds since the Unix epoch.
    pub modified_ms: i64,
    /// Who uploaded it (a user name, or empty when the server does not know).
    pub uploader: String,
}

/// The namespace of a store: which names exist and which blob each one is. Every method may be
/// called concurrently, from several servers sharing the catalog.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync + fmt::Debug {
    /// Every file, sorted by name (byte order).
    async fn list(&self) -> Result<Vec<CatalogEntry>, StoreError>;
    /// Every file's name, id and size, sorted by name (byte order): what a listing needs, and
    /// only that (a third of the columns of [`list`](Self::list)).
    async fn listing(&self) -> Result<Vec<super::FileEntry>, StoreError>;
    /// The file of that name.
    async fn get(&self, name: &FileName) -> Result<Option<CatalogEntry>, StoreError>;
    /// The names of the files whose content has `id`, in name order.
    async fn names_of(&self, id: FileId) -> Result<Vec<FileName>, StoreError>;
    /// Names of files equivalent to `name` (same NFC) whose bytes differ from it.
    async fn equivalents(&self, name: &FileName) -> Result<Vec<FileName>, StoreError>;
    /// Fails as a commit to `name` would fail now (an early check; the commit checks again).
    async fn check_free(&self, name: &FileName) -> Result<(), StoreError>;
    /// Records that an upload is writing `blob`, so the sweep leaves it alone until the upload
    /// commits or is older than the sweep's upload grace.
    async fn stage(&self, blob: &str) -> Result<(), StoreError>;
    /// Forgets an upload that will not commit (its blob becomes an orphan for the sweep).
    async fn unstage(&self, blob: &str) -> Result<(), StoreError>;
    /// Makes `entry` visible, in one transaction: consumes its blob's `pending` row and claims
    /// its name and folders. Never replaces.
    ///
    /// # Errors
    /// [`StoreError::Exists`], [`StoreError::NotAFolder`], [`StoreError::Equivalent`], or a
    /// failure (also when the sweep took the blob: the upload was older than its grace).
    async fn commit(&self, entry: &CatalogEntry) -> Result<(), StoreError>;
    /// Renames a file in one transaction, never replacing one.
    async fn rename(&self, from: &FileName, to: &FileName) -> Result<(), StoreError>;
    /// Deletes a file's row; returns it (its blob is left to the sweep).
    async fn delete(&self, name: &FileName) -> Result<CatalogEntry, StoreError>;
    /// How many files there are, and their bytes in all.
    async fn usage(&self) -> Result<(u64, u64), StoreError>;
    /// Decides whether the sweep may delete `blob`, and makes sure no commit can use it
    /// afterwards: removes its `pending` row if it was staged before `stale_before_ms`, and
    /// answers true only if no `pending` row is left and no file points to it.
    async fn claim_orphan(&self, blob: &str, stale_before_ms: i64) -> Result<bool, StoreError>;
}

/// Milliseconds since the Unix epoch, now.
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// How many times a transaction that lost to another one is run again before its error is
/// given up to the caller.
const TRIES: u32 = 8;

/// Whether `e` is a transaction that lost to a concurrent one and may simply run again:
/// PostgreSQL's deadlock (`40P01`: two servers renaming `a`→`b` and `b`→`a` at once each hold
/// the row the other needs) or serialization failure (`40001`), SQLite's busy database
/// (`5`, `517`: another process's write won).
fn transient(e: &StoreError) -> bool {
    let StoreError::Backend(inner) = e else {
        return false;
    };
    let Some(sqlx::Error::Database(d)) = inner.downcast_ref::<sqlx::Error>() else {
        return false;
    };
    matches!(d.code().as_deref(), Some("40P01" | "40001" | "5" | "517"))
}

/// Runs the transaction `attempt` until it does not lose to a concurrent one, at most
/// [`TRIES`] times, waiting a random few milliseconds (growing) between tries so two servers
/// that deadlocked do not meet again in step. A conflict (`Exists`, `NotFound`, ...) is a
/// result, not a loss: it is returned at once.
async fn retried<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if tries < TRIES && transient(&e) => {
                let mut r = [0u8; 2];
                let _ = getrandom::fill(&mut r);
                let cap = 4u64 << tries.min(6);
                let wait = 1 + u64::from(u16::from_le_bytes(r)) % cap;
                tracing::debug!(tries, wait_ms = wait, error = %e, "catalog transaction retried");
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                tries += 1;
            }
            done => return done,
        }
    }
}

/// The catalog in a SQL database: SQLite or PostgreSQL.
pub struct SqlCatalog {
    pool: AnyPool,
    url_kind: &'static str,
}

impl fmt::Debug for SqlCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlCatalog")
            .field("database", &self.url_kind)
            .finish_non_exhaustive()
    }
}

/// Each file's name and canonical form, and its folders (as `paths` rows).
const SCHEMA_SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS files (
        name TEXT NOT NULL PRIMARY KEY,
        canon TEXT NOT NULL UNIQUE,
        blob TEXT NOT NULL,
        size BIGINT NOT NULL,
        md5 TEXT NOT NULL,
        created BIGINT NOT NULL,
        modified BIGINT NOT NULL,
        uploader TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS files_md5 ON files (md5)",
    "CREATE INDEX IF NOT EXISTS files_blob ON files (blob)",
    "CREATE TABLE IF NOT EXISTS paths (
        path TEXT NOT NULL PRIMARY KEY,
        kind TEXT NOT NULL,
        refs BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pending (
        blob TEXT NOT NULL PRIMARY KEY,
        started BIGINT NOT NULL)",
];

const SCHEMA_POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS files (
        name TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
        canon TEXT COLLATE \"C\" NOT NULL UNIQUE,
        blob TEXT COLLATE \"C\" NOT NULL,
        size BIGINT NOT NULL,
        md5 TEXT COLLATE \"C\" NOT NULL,
        created BIGINT NOT NULL,
        modified BIGINT NOT NULL,
        uploader TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS files_md5 ON files (md5)",
    "CREATE INDEX IF NOT EXISTS files_blob ON files (blob)",
    "CREATE TABLE IF NOT EXISTS paths (
        path TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
        kind TEXT NOT NULL,
        refs BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pending (
        blob TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
        started BIGINT NOT NULL)",
];

/// The folders of a name, outermost first (`a/b/c` → `a`, `a/b`).
fn folders(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(move |(at, _)| &name[..at])
}

fn entry_of(row: &sqlx::any::AnyRow) -> Result<CatalogEntry, StoreError> {
    let name: String = row.try_get("name").map_err(db)?;
    let md5: String = row.try_get("md5").map_err(db)?;
    let size: i64 = row.try_get("size").map_err(db)?;
    let bad = |what: &str| StoreError::Backend(format!("catalog row with a bad {what}").into());
    Ok(CatalogEntry {
        name: FileName::parse(&name).map_err(|_| bad("name"))?,
        blob: row.try_get("blob").map_err(db)?,
        size: u64::try_from(size).map_err(|_| bad("size"))?,
        id: FileId::parse(&md5).map_err(|_| bad("id"))?,
        created_ms: row.try_get("created").map_err(db)?,
        modified_ms: row.try_get("modified").map_err(db)?,
        uploader: row.try_get("uploader").map_err(db)?,
    })
}

const COLUMNS: &str = "name, blob, size, md5, created, modified, uploader";

type Tx = sqlx::Transaction<'static, sqlx::Any>;

impl SqlCatalog {
    /// Connects to the catalog at `url` (`sqlite://PATH` or `postgres://...`), creating the
    /// SQLite file and the tables if they do not exist.
    ///
    /// # Errors
    /// An unsupported URL, or if the database cannot be reached or set up.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let (url, kind, schema, pool) = if let Some(path) = url.strip_prefix("sqlite://") {
            // One writer at a time is SQLite's rule anyway; WAL lets readers go on meanwhile.
            (
                format!("sqlite://{path}?mode=rwc"),
                "sqlite",
                SCHEMA_SQLITE,
                AnyPoolOptions::new().max_connections(4),
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (
                url.to_owned(),
                "postgres",
                SCHEMA_POSTGRES,
                AnyPoolOptions::new().max_connections(16),
            )
        } else {
            return Err(StoreError::Backend(
                format!("unsupported catalog URL (use sqlite://PATH or postgres://...): {url}")
                    .into(),
            ));
        };
        let pool = pool
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect(&url)
            .await
            .map_err(db)?;
        if kind == "sqlite" {
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .map_err(db)?;
        }
        for statement in schema {
            sqlx::query(statement).execute(&pool).await.map_err(db)?;
        }
        Ok(Self {
            pool,
            url_kind: kind,
        })
    }

    async fn begin(&self) -> Result<Tx, StoreError> {
        self.pool.begin().await.map_err(db)
    }

    /// Claims `name` and its folders inside `tx`; on a conflict says which.
    async fn claim(tx: &mut Tx, name: &FileName) -> Result<(), StoreError> {
        let text = name.as_str();
        for folder in folders(text) {
            let done = sqlx::query(
                "INSERT INTO paths (path, kind, refs) VALUES ($1, 'd', 1)
                 ON CONFLICT (path) DO UPDATE SET refs = paths.refs + 1 WHERE paths.kind = 'd'",
            )
            .bind(folder)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotAFolder(folder.to_owned()));
            }
        }
        let done = sqlx::query(
            "INSERT INTO paths (path, kind, refs) VALUES ($1, 'f', 1) ON CONFLICT (path) DO NOTHING",
        )
        .bind(text)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM paths WHERE path = $1")
                .bind(text)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db)?;
            return Err(if kind.as_deref() == Some("d") {
                StoreError::FolderExists(name.clone())
            } else {
                StoreError::Exists(name.clone())
            });
        }
        Ok(())
    }

    /// Releases `name` and its folders inside `tx` (the file row is removed by the caller).
    async fn release(tx: &mut Tx, name: &FileName) -> Result<(), StoreError> {
        let text = name.as_str();
        sqlx::query("DELETE FROM paths WHERE path = $1 AND kind = 'f'")
            .bind(text)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        for folder in folders(text) {
            sqlx::query("UPDATE paths SET refs = refs - 1 WHERE path = $1 AND kind = 'd'")
                .bind(folder)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
            sqlx::query("DELETE FROM paths WHERE path = $1 AND kind = 'd' AND refs <= 0")
                .bind(folder)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    /// Inserts the file row inside `tx`; a name equivalent to an existing one is refused by the
    /// unique canonical form.
    async fn insert(tx: &mut Tx, e: &CatalogEntry) -> Result<(), StoreError> {
        let size = i64::try_from(e.size)
            .map_err(|_| StoreError::Backend("a size over 2^63 bytes".into()))?;
        let done = sqlx::query(
            "INSERT INTO files (name, canon, blob, size, md5, created, modified, uploader)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(e.name.as_str())
        .bind(e.name.canonical().into_owned())
        .bind(&e.blob)
        .bind(size)
        .bind(e.id.to_hex())
        .bind(e.created_ms)
        .bind(e.modified_ms)
        .bind(&e.uploader)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        // The name itself was claimed in `paths` already, so the conflict is on the canonical
        // form: an equivalent name exists.
        let existing: Option<String> =
            sqlx::query_scalar("SELECT name FROM files WHERE canon = $1")
                .bind(e.name.canonical().into_owned())
                .fetch_optional(&mut **tx)
                .await
                .map_err(db)?;
        Err(match existing.and_then(|n| FileName::parse(&n).ok()) {
            Some(existing) if existing != e.name => StoreError::Equivalent {
                name: e.name.clone(),
                existing,
            },
            _ => StoreError::Exists(e.name.clone()),
        })
    }

    /// One try of [`Catalog::commit`].
    async fn commit_once(&self, entry: &CatalogEntry) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let staged = sqlx::query("DELETE FROM pending WHERE blob = $1")
            .bind(&entry.blob)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if staged.rows_affected() != 1 {
            return Err(StoreError::Backend(
                "the upload's blob was swept before its commit (older than the upload grace)"
                    .into(),
            ));
        }
        Self::claim(&mut tx, &entry.name).await?;
        Self::insert(&mut tx, entry).await?;
        tx.commit().await.map_err(db)
    }

    /// One try of [`Catalog::rename`].
    async fn rename_once(&self, from: &FileName, to: &FileName) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let Some(mut entry) = Self::take(&mut tx, from).await? else {
            return Err(not_found(from));
        };
        entry.name = to.clone();
        entry.modified_ms = now_ms();
        Self::claim(&mut tx, to).await?;
        Self::insert(&mut tx, &entry).await?;
        tx.commit().await.map_err(db)
    }

    /// One try of [`Catalog::delete`].
    async fn delete_once(&self, name: &FileName) -> Result<CatalogEntry, StoreError> {
        let mut tx = self.begin().await?;
        let Some(entry) = Self::take(&mut tx, name).await? else {
            return Err(not_found(name));
        };
        tx.commit().await.map_err(db)?;
        Ok(entry)
    }

    async fn take(tx: &mut Tx, name: &FileName) -> Result<Option<CatalogEntry>, StoreError> {
        let row = sqlx::query(&format!(
            "DELETE FROM files WHERE name = $1 RETURNING {COLUMNS}"
        ))
        .bind(name.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let entry = entry_of(&row)?;
        Self::release(tx, name).await?;
        Ok(Some(entry))
    }
}

fn not_found(name: &FileName) -> StoreError {
    StoreError::NotFound(super::Target::name(name.clone()))
}

fn sorted_names(mut names: Vec<String>) -> Vec<FileName> {
    names.sort_unstable();
    names
        .into_iter()
        .filter_map(|n| FileName::parse(&n).ok())
        .collect()
}

#[async_trait::async_trait]
impl Catalog for SqlCatalog {
    async fn list(&self) -> Result<Vec<CatalogEntry>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM files ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut out = rows.iter().map(entry_of).collect::<Result<Vec<_>, _>>()?;
        // Byte order whatever the database's collation (already sorted: one linear pass).
        out.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(out)
    }

    async fn listing(&self) -> Result<Vec<super::FileEntry>, StoreError> {
        // One row holding every file as a line `name TAB md5 TAB size`, not a row per file:
        // through sqlx each row costs a hand-off between threads and a decoding into owned
        // values, most of a listing's time (issue 15: 100,000 names in 1.3 s that way). A name
        // holds no control character, so the tabs and newlines cannot be a name's; the count
        // beside it catches a row that would say otherwise.
        let sql = if self.url_kind == "sqlite" {
            "SELECT count(*), group_concat(name || '\t' || md5 || '\t' || size, '\n' ORDER BY name)
             FROM files"
        } else {
            "SELECT count(*), string_agg(name || '\t' || md5 || '\t' || CAST(size AS TEXT), '\n'
             ORDER BY name) FROM files"
        };
        let row = sqlx::query(sql).fetch_one(&self.pool).await.map_err(db)?;
        let count: i64 = row.try_get(0).map_err(db)?;
        let text: Option<String> = row.try_get(1).map_err(db)?;
        let bad = |what: &str| StoreError::Backend(format!("catalog row with a bad {what}").into());
        let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for line in text.as_deref().unwrap_or_default().split('\n') {
            if line.is_empty() && count == 0 {
                continue;
            }
            let mut parts = line.splitn(3, '\t');
            let (Some(name), Some(md5), Some(size)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("name"));
            };
            out.push(super::FileEntry {
                name: FileName::parse(name).map_err(|_| bad("name"))?,
                id: FileId::parse(md5).map_err(|_| bad("id"))?,
                size: size.parse().map_err(|_| bad("size"))?,
            });
        }
        if i64::try_from(out.len()).ok() != Some(count) {
            return Err(bad("name"));
        }
        // Already in order (the names compare byte for byte in both databases); this only
        // checks it, in one pass.
        out.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(out)
    }

    async fn get(&self, name: &FileName) -> Result<Option<CatalogEntry>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM files WHERE name = $1"))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(entry_of).transpose()
    }

    async fn names_of(&self, id: FileId) -> Result<Vec<FileName>, StoreError> {
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM files WHERE md5 = $1")
            .bind(id.to_hex())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(sorted_names(names))
    }

    async fn equivalents(&self, name: &FileName) -> Result<Vec<FileName>, StoreError> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM files WHERE canon = $1 AND name <> $2")
                .bind(name.canonical().into_owned())
                .bind(name.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(sorted_names(names))
    }

    async fn check_free(&self, name: &FileName) -> Result<(), StoreError> {
        let text = name.as_str();
        let mut keys: Vec<&str> = folders(text).collect();
        keys.push(text);
        // A handful of keys (at most 32 components): one query each keeps the SQL portable.
        for key in keys {
            let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM paths WHERE path = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            match kind.as_deref() {
                None => {}
                Some("d") if key != text => {}
                Some("d") if key == text => return Err(StoreError::FolderExists(name.clone())),
                Some(_) if key == text => return Err(StoreError::Exists(name.clone())),
                Some(_) => return Err(StoreError::NotAFolder(key.to_owned())),
            }
        }
        Ok(())
    }

    async fn stage(&self, blob: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO pending (blob, started) VALUES ($1, $2)")
            .bind(blob)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn unstage(&self, blob: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pending WHERE blob = $1")
            .bind(blob)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn commit(&self, entry: &CatalogEntry) -> Result<(), StoreError> {
        retried(|| self.commit_once(entry)).await
    }

    async fn rename(&self, from: &FileName, to: &FileName) -> Result<(), StoreError> {
        retried(|| self.rename_once(from, to)).await
    }

    async fn delete(&self, name: &FileName) -> Result<CatalogEntry, StoreError> {
        retried(|| self.delete_once(name)).await
    }

    async fn usage(&self) -> Result<(u64, u64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes FROM files",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let n: i64 = row.try_get("n").map_err(db)?;
        let bytes: i64 = row.try_get("bytes").map_err(db)?;
        Ok((
            u64::try_from(n).unwrap_or(0),
            u64::try_from(bytes).unwrap_or(0),
        ))
    }

    async fn claim_orphan(&self, blob: &str, stale_before_ms: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM pending WHERE blob = $1 AND started < $2")
            .bind(blob)
            .bind(stale_before_ms)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let staged: Option<i64> = sqlx::query_scalar("SELECT started FROM pending WHERE blob = $1")
            .bind(blob)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let used: Option<String> =
            sqlx::query_scalar("SELECT name FROM files WHERE blob = $1 LIMIT 1")
                .bind(blob)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(staged.is_none() && used.is_none())
    }
}
