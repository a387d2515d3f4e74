//! Checks every request passes before any handler runs, from its head alone (the body is not
//! read yet, so a refused request costs nothing, whatever `Content-Length` it announces):
//!
//! 1. `Host` must name this server (the bound address, the address the connection arrived on,
//!    `localhost`, `127.0.0.1` or `[::1]`, with the bound port or none) or a name given with
//!    `--allowed-host`: a web page that rebinds its own domain name to 127.0.0.1 sends its
//!    domain as `Host` and is refused (403).
//! 2. An `Origin`, when present, must name such a host too: browsers send one on cross-site
//!    requests, and a page on another site must not drive the API (403). No `Origin` is fine:
//!    that is a non-browser client.
//! 3. The API key, when one is set (401).
//! 4. A POST must be `application/json` (415): `text/plain` is what a page can POST
//!    cross-site without a CORS preflight.
//! 5. A `Content-Length` over the body limit is refused at once (413), instead of after the
//!    client has sent (or failed to send) that many bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::listen::LocalAddr;
use super::{ApiError, AppState, ServeConfig};

/// The middleware (see the module doc).
pub(crate) async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let local = req.extensions().get::<LocalAddr>().map(|l| l.0);
    match check(&st.cfg, st.bound, local, req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check(
    cfg: &ServeConfig,
    bound: SocketAddr,
    local: Option<SocketAddr>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let hosts = Hosts { cfg, bound, local };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match host {
        Some(h) if hosts.allows(h) => {}
        Some(h) => return Err(forbidden(format!("Host {h:?} is not this server (see --allowed-host)"))),
        None => return Err(forbidden("a Host header is required".into())),
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let o = origin.to_str().unwrap_or("");
        let authority = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://"));
        if !authority.is_some_and(|a| hosts.allows(a)) {
            return Err(forbidden(format!("requests from the web page at {o:?} are not allowed (see --allowed-host)")));
        }
    }
    super::authorize(cfg, headers)?;
    if method == Method::POST && !is_json(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "the body must be sent with Content-Type: application/json",
        ));
    }
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if let Some(n) = announced.filter(|&n| n > cfg.max_body_bytes as u64) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("the body has {n} bytes; at most {} are accepted", cfg.max_body_bytes),
        ));
    }
    Ok(())
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

fn is_json(headers: &HeaderMap) -> bool {
    let v = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The names this server answers to.
struct Hosts<'a> {
    cfg: &'a ServeConfig,
    bound: SocketAddr,
    local: Option<SocketAddr>,
}

impl Hosts<'_> {
    /// Whether `value` (`host`, `host:port`, `[v6]` or `[v6]:port`) names this server.
    fn allows(&self, value: &str) -> bool {
        let value = value.trim().to_ascii_lowercase();
        // An --allowed-host entry with a port must match exactly (e.g. a local web UI's origin).
        if self.cfg.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(&value)) {
            return true;
        }
        let Some((name, port)) = split_host(&value) else { return false };
        if port.is_some_and(|p| p != self.bound.port()) {
            return false;
        }
        let ip = name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        let is_own = |a: SocketAddr| !a.ip().is_unspecified() && ip == Some(a.ip());
        matches!(name, "localhost" | "127.0.0.1" | "[::1]")
            || is_own(self.bound)
            || self.local.is_some_and(is_own)
            || self.cfg.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(name))
    }
}

/// Splits `host[:port]`; None when the port is not a number or the form is malformed.
fn split_host(value: &str) -> Option<(&str, Option<u16>)> {
    let (name, rest) = if value.starts_with('[') {
        let end = value.find(']')?;
        (&value[..=end], &value[end + 1..])
    } else {
        match value.find(':') {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, ""),
        }
    };
    if name.is_empty() || name == "[]" {
        return None;
    }
    match rest {
        "" => Some((name, None)),
        r => r.strip_prefix(':').and_then(|p| p.parse().ok()).map(|p| (name, Some(p))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_ports_are_matched_exactly() {
        let cfg =
            ServeConfig { allowed_hosts: vec!["pilot.lan".into(), "localhost:3000".into()], ..Default::default() };
        let h = Hosts { cfg: &cfg, bound: "127.0.0.1:8000".parse().unwrap(), local: None };
        for ok in [
            "127.0.0.1:8000",
            "localhost",
            "LOCALHOST:8000",
            "[::1]:8000",
            "pilot.lan",
            "pilot.lan:8000",
            "localhost:3000",
        ] {
            assert!(h.allows(ok), "{ok} should be allowed");
        }
        for bad in [
            "evil.com",
            "evil.com:8000",
            "localhost:8001",
            "127.0.0.1:80x",
            "localhost.evil.com",
            "",
            "[::1",
            "1.2.3.4",
        ] {
            assert!(!h.allows(bad), "{bad} should be refused");
        }
    }

    #[test]
    fn on_an_unspecified_address_the_connections_local_ip_is_this_server() {
        let cfg = ServeConfig::default();
        let h = Hosts {
            cfg: &cfg,
            bound: "0.0.0.0:8000".parse().unwrap(),
            local: Some("192.168.1.5:8000".parse().unwrap()),
        };
        assert!(h.allows("192.168.1.5:8000"));
        assert!(!h.allows("0.0.0.0:8000"));
        assert!(!h.allows("192.168.1.6:8000"));
    }

    #[test]
    fn only_json_posts_from_allowed_origins_pass() {
        let cfg = ServeConfig::default();
        let bound: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(check(&cfg, bound, None, &Method::POST, &h).unwrap_err().status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        h.insert(header::CONTENT_TYPE, "Application/JSON; charset=utf-8".parse().unwrap());
        assert!(check(&cfg, bound, None, &Method::POST, &h).is_ok());
        h.insert(header::ORIGIN, "http://localhost:8000".parse().unwrap());
        assert!(check(&cfg, bound, None, &Method::POST, &h).is_ok());
        for bad in ["https://evil.com", "null", "http://localhost:3000"] {
            h.insert(header::ORIGIN, bad.parse().unwrap());
            assert_eq!(check(&cfg, bound, None, &Method::GET, &h).unwrap_err().status, StatusCode::FORBIDDEN, "{bad}");
        }
    }

    #[test]
    fn a_body_announced_over_the_limit_is_refused_from_the_head() {
        let cfg = ServeConfig { max_body_bytes: 1000, ..ServeConfig::default() };
        let bound: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8000".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
        assert!(check(&cfg, bound, None, &Method::POST, &h).is_ok());
        h.insert(header::CONTENT_LENGTH, "1001".parse().unwrap());
        assert_eq!(check(&cfg, bound, None, &Method::POST, &h).unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
