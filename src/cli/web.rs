//! `barge serve --web [ADDR:]PORT`: starts the web gateway ([`barge::web`]) beside the TCP
//! server, on the same store, with the same identity and the same rules.

use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use barge::security::identity::Identity;
use barge::store::Store;
use barge::web::{self, Gateway, WebConfig};

/// Where `--web` asks the gateway to listen: `PORT` (on the server's `--host`), `ADDR:PORT`
/// or `[V6ADDR]:PORT`.
pub(crate) fn parse_web(spec: &str) -> Result<(Option<String>, u16), String> {
    let bad = || format!("invalid --web {spec:?}: use PORT, ADDR:PORT or [ADDR]:PORT");
    let (host, port) = match spec.rsplit_once(':') {
        None => (None, spec),
        Some((host, port)) => {
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if host.is_empty() || (host.contains(':') && !spec.starts_with('[')) {
                return Err(bad());
            }
            (Some(host.to_owned()), port)
        }
    };
    let port = port.parse::<u16>().map_err(|_| bad())?;
    Ok((host, port))
}

/// The gateway's connection limits and upload rate, from `serve`'s flags.
pub(crate) struct Limits {
    /// `--web-max-connections`.
    pub(crate) connections: usize,
    /// `--web-max-connections-per-ip`.
    pub(crate) per_ip: usize,
    /// `--min-rate`, shared with the TCP side.
    pub(crate) min_rate: u64,
}

/// Binds the gateway and starts it in the background; returns its address and the task, which
/// ends after `shutdown` once the requests in flight are done.
pub(crate) async fn start(
    (host, port): (String, u16),
    store: Arc<Store>,
    policy: Arc<barge::server::Access>,
    identity: Option<&Identity>,
    limits: Limits,
    metrics: Arc<barge::metrics::Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = super::serve::listen(&host, port)
        .await
        .with_context(|| format!("cannot listen on {host}:{port} for the web page"))?;
    let addr = listener.local_addr()?;
    let tls = identity
        .map(barge::security::tls::server_config)
        .transpose()?;
    let fingerprint = identity.map(|i| i.fingerprint().to_string());
    let config = WebConfig {
        max_connections: limits.connections,
        max_connections_per_ip: limits.per_ip,
        min_rate: limits.min_rate,
        metrics,
        ..WebConfig::default()
    };
    let gateway = Gateway::new(store, policy, config, fingerprint);
    let task = tokio::spawn(web::run(listener, tls, gateway, shutdown));
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::parse_web;

    #[test]
    fn web_addresses() {
        assert_eq!(parse_web("8080"), Ok((None, 8080)));
        assert_eq!(parse_web("0.0.0.0:80"), Ok((Some("0.0.0.0".into()), 80)));
        assert_eq!(parse_web("[::1]:8443"), Ok((Some("::1".into()), 8443)));
        assert_eq!(parse_web("localhost:1"), Ok((Some("localhost".into()), 1)));
        for bad in ["", "x", ":80", "::1:80", "1.2.3.4:", "1.2.3.4:99999"] {
            assert!(parse_web(bad).is_err(), "{bad}");
        }
    }
}
