//! Checks every request passes before any route sees it: what a page on another site may make
//! a visitor's browser do here (cross-site request forgery), and which host names the gateway
//! answers to (DNS rebinding).
//!
//! - A request that changes something (`PUT`, `POST`, `DELETE`) from a browser must come from
//!   this gateway's own page: its `Origin` (sent by browsers on such requests) must be this
//!   gateway's origin, and `Sec-Fetch-Site`, where sent, `same-origin` or `none`. Tools such as
//!   `curl` send neither and are let through; they prove who they are with a token, not with
//!   ambient browser state.
//! - A gateway bound to a loopback address answers only to IP addresses and `localhost`: a page
//!   on `evil.example` whose name was made to resolve to 127.0.0.1 reaches the port with
//!   `Host: evil.example` and is refused (`421`), so it cannot read what the local share holds.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether the gateway listens on loopback only (set once, from the bound address).
#[derive(Clone, Copy, Debug)]
pub(super) struct Guard {
    pub(super) loopback: bool,
}

pub(super) async fn check(guard: Guard, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    if guard.loopback && !host.as_deref().is_some_and(is_local_host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "This server answers to its address or localhost only",
        );
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes && !same_origin(headers, host.as_deref()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "Cross-origin request refused: changes are only accepted from this server's own page",
        );
    }
    next.run(req).await
}

fn refuse(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": text }))).into_response()
}

/// `host` (a `Host` header: a name or address, maybe a port) is an IP address or `localhost`.
fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split_once(']')
                .is_some_and(|(a, _)| a.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
}

/// The request did not come from another site's page: no `Origin` or ours, and no
/// `Sec-Fetch-Site` other than `same-origin`/`none`.
fn same_origin(headers: &HeaderMap, host: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return false;
    }
    match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => {
            // `scheme://host[:port]`: the host part must be what the request was sent to.
            let origin = origin.to_str().unwrap_or("");
            let authority = origin.split_once("://").map_or("", |(_, a)| a);
            host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts() {
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:80",
            "192.168.1.5",
            "app.localhost",
        ] {
            assert!(is_local_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:80",
            "127.0.0.1.evil.example",
            "[evil]:80",
            "",
        ] {
            assert!(!is_local_host(bad), "{bad}");
        }
    }

    #[test]
    fn origins() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().expect("header"));
            }
            h
        };
        let host = Some("10.0.0.2:8443");
        assert!(same_origin(&with(&[]), host));
        assert!(same_origin(
            &with(&[("origin", "https://10.0.0.2:8443")]),
            host
        ));
        assert!(same_origin(
            &with(&[("sec-fetch-site", "same-origin")]),
            host
        ));
        assert!(!same_origin(
            &with(&[("origin", "https://evil.example")]),
            host
        ));
        assert!(!same_origin(
            &with(&[("origin", "https://10.0.0.2:8444")]),
            host
        ));
        assert!(!same_origin(&with(&[("origin", "null")]), host));
        assert!(!same_origin(
            &with(&[("sec-fetch-site", "cross-site")]),
            host
        ));
        assert!(!same_origin(
            &with(&[("sec-fetch-site", "same-site")]),
            host
        ));
    }
}
