//! What every request passes before a handler sees it, and what every
//! response carries.
//!
//! - **Host**: a server on a loopback address answers only to
//!   `localhost`, `127.0.0.1` and `[::1]` on its port, so a web page that
//!   points its own host name at 127.0.0.1 (DNS rebinding) is refused.
//! - **Origin** (every request but GET and HEAD): a browser's `Origin` must
//!   be this server's own (`http://HOST`), and `Sec-Fetch-Site`, when sent,
//!   `same-origin` or `none`; so a page elsewhere cannot drive a local
//!   server. Clients that are not browsers send neither and pass.
//! - **Token** (every request but GET and HEAD, when one is configured):
//!   `Authorization: Bearer TOKEN`, compared in constant time.
//! - **Headers**: a strict Content-Security-Policy (only this server's own
//!   scripts, styles and connections; no inline code, no frames, no forms),
//!   `nosniff`, no referrer, no framing, and no caching of API answers.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flow_core::Secret;
use std::net::SocketAddr;
use std::sync::Arc;

/// The policy every response carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// What the guard checks against.
pub struct Guard {
    pub token: Option<Secret>,
    /// `Host` values accepted; `None` accepts any (a non-loopback server,
    /// which needs a token to start).
    pub hosts: Option<Vec<String>>,
}

impl Guard {
    pub fn new(token: Option<Secret>, addr: SocketAddr) -> Guard {
        let port = addr.port();
        let hosts = addr.ip().is_loopback().then(|| {
            let mut hosts = vec![
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ];
            let own = addr.to_string();
            if !hosts.contains(&own) {
                hosts.push(own);
            }
            hosts
        });
        Guard { token, hosts }
    }

    /// Checks one request's headers.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| ApiError::Forbidden("the request has no Host header".into()))?;
        if let Some(hosts) = &self.hosts {
            if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                return Err(ApiError::Forbidden(format!(
                    "this server answers to {} only, not to host '{}'",
                    hosts.join(", "),
                    crate::catalog::clip(host)
                )));
            }
        }
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let own = format!("http://{host}");
            if !origin.eq_ignore_ascii_case(&own) {
                return Err(ApiError::Forbidden(format!(
                    "requests that change state must come from this server's own page ({own}), not from '{}'",
                    crate::catalog::clip(origin)
                )));
            }
        }
        if let Some(site) = headers.get("sec-fetch-site").and_then(|s| s.to_str().ok()) {
            if site != "same-origin" && site != "none" {
                return Err(ApiError::Forbidden(format!(
                    "requests that change state must come from this server's own page (Sec-Fetch-Site: {})",
                    crate::catalog::clip(site)
                )));
            }
        }
        if let Some(token) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|a| a.to_str().ok())
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::trim);
            match given {
                None => {
                    return Err(ApiError::Unauthorized(
                        "this server needs `Authorization: Bearer TOKEN` for requests that change state"
                            .into(),
                    ))
                }
                Some(given) if !same(given.as_bytes(), token.expose().as_bytes()) => {
                    return Err(ApiError::Unauthorized("the token is wrong".into()))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Equal in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: checks the request, then adds the security headers to
/// whatever the handler answered.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let mut response = match guard.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if is_api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn loopback_servers_answer_to_their_own_names_only() {
        let g = Guard::new(None, "127.0.0.1:8080".parse().unwrap());
        assert!(g
            .check(&Method::GET, &headers(&[("host", "localhost:8080")]))
            .is_ok());
        assert!(g
            .check(&Method::GET, &headers(&[("host", "127.0.0.1:8080")]))
            .is_ok());
        let e = g
            .check(&Method::GET, &headers(&[("host", "evil.example:8080")]))
            .unwrap_err();
        assert!(matches!(e, ApiError::Forbidden(_)));
        assert!(g.check(&Method::GET, &HeaderMap::new()).is_err());
    }

    #[test]
    fn posts_need_the_own_origin_and_the_token() {
        let g = Guard::new(
            Some(Secret::new("s3cret")),
            "127.0.0.1:9000".parse().unwrap(),
        );
        let own = [
            ("host", "127.0.0.1:9000"),
            ("authorization", "Bearer s3cret"),
        ];
        assert!(g.check(&Method::POST, &headers(&own)).is_ok());
        let mut with_origin = own.to_vec();
        with_origin.push(("origin", "http://127.0.0.1:9000"));
        assert!(g.check(&Method::POST, &headers(&with_origin)).is_ok());
        let foreign = [
            ("host", "127.0.0.1:9000"),
            ("authorization", "Bearer s3cret"),
            ("origin", "http://evil.example"),
        ];
        assert!(matches!(
            g.check(&Method::POST, &headers(&foreign)).unwrap_err(),
            ApiError::Forbidden(_)
        ));
        let cross = [
            ("host", "127.0.0.1:9000"),
            ("authorization", "Bearer s3cret"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert!(g.check(&Method::POST, &headers(&cross)).is_err());
        for auth in ["Bearer wrong", "Basic s3cret", "Bearer s3cret2"] {
            let h = headers(&[("host", "127.0.0.1:9000"), ("authorization", auth)]);
            assert!(matches!(
                g.check(&Method::POST, &h).unwrap_err(),
                ApiError::Unauthorized(_)
            ));
        }
        let e = g
            .check(&Method::POST, &headers(&[("host", "127.0.0.1:9000")]))
            .unwrap_err();
        assert!(matches!(e, ApiError::Unauthorized(_)));
        assert!(!e.to_string().contains("s3cret"));
        // Reads need no token.
        assert!(g
            .check(&Method::GET, &headers(&[("host", "127.0.0.1:9000")]))
            .is_ok());
    }
}
