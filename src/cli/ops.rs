//! The operator's side of `barge serve` that is not the banner: the checks of the shared
//! folder made before anything is bound or created, and the `/metrics` endpoint (axum) over
//! the library's [`barge::metrics::Metrics`]. It owns neither the start order (`serve`) nor
//! the metrics themselves.

use std::path::Path;
use std::sync::Arc;

use barge::store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the root is before the server starts.
pub(crate) enum Root {
    /// A folder the server can use.
    Exists,
    /// Missing, with a parent folder to create it in.
    Missing,
}

/// Checks the shared folder without creating anything: a typo must not become a new folder
/// tree (`mkdir -p`), and a root the server cannot use is told in words.
pub(crate) fn check_root(root: &Path) -> anyhow::Result<Root> {
    let shown = root.display();
    let meta = match std::fs::metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = match root.parent() {
                Some(p) if p.as_os_str().is_empty() => Path::new("."),
                Some(p) => p,
                None => Path::new("/"),
            };
            if !parent.is_dir() {
                anyhow::bail!(
                    "the shared folder `{shown}` does not exist, nor does its parent `{}`; \
                     check the path, or create it first (mkdir -p)",
                    parent.display()
                );
            }
            return Ok(Root::Missing);
        }
        Err(e) => anyhow::bail!("cannot use the shared folder `{shown}`: {e}"),
    };
    if !meta.is_dir() {
        anyhow::bail!("`{shown}` is a file, not a folder: give --root a folder to share");
    }
    use rustix::fs::{Access as Mode, access};
    if access(root, Mode::READ_OK | Mode::EXEC_OK).is_err() {
        anyhow::bail!("cannot read the shared folder `{shown}`: permission denied");
    }
    // The store keeps its index and its temporary files in `.barge` inside the root, even
    // when read-only: a root it cannot write is usable only if that folder is.
    let state = root.join(barge::name::STATE_DIR);
    let state_ok = state.is_dir() && access(&state, Mode::WRITE_OK | Mode::EXEC_OK).is_ok();
    if access(root, Mode::WRITE_OK).is_err() && !state_ok {
        anyhow::bail!(
            "cannot write to the shared folder `{shown}`: permission denied; barge keeps its \
             index in `{}` (even with --read-only): create that folder, writable by this user, \
             or share a folder this user can write",
            state.display()
        );
    }
    Ok(Root::Exists)
}

/// Serves `GET /metrics` until `shutdown`; the index gauges are brought up to date at each
/// scrape.
pub(crate) async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<barge::metrics::Metrics>,
    store: Arc<Store>,
    shutdown: CancellationToken,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, store) = (Arc::clone(&metrics), Arc::clone(&store));
            async move {
                if let Ok(listing) = store.list().await {
                    metrics.index(listing.len(), listing.pending);
                }
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    let serve = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
    if let Err(e) = serve.await {
        tracing::warn!("metrics endpoint stopped: {e}");
    }
}
