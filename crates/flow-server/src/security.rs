//! What every request passes before a handler sees it, and what every
//! response carries.
//!
//! - **Host**: a server on a loopback address answers only to
//!   `localhost`, `127.0.0.1` and `[::1]` on its port (without the port
//!   too on port 80, where clients leave it out), so a web page that
//!   points its own host name at 127.0.0.1 (DNS rebinding) is refused.
//! - **Origin** (every request but GET and HEAD): a browser's `Origin` must
//!   be this server's own (`http://HOST`), and `Sec-Fetch-Site`, when sent,
//!   `same-origin` or `none`; so a page elsewhere cannot drive a local
//!   server. Clients that are not browsers send neither and pass.
//! - **Token** (every request but GET and HEAD, when one is configured):
//!   `Authorization: Bearer TOKEN`, compared in constant time (also when
//!   the lengths differ). A token no header can carry (see
//!   [`token_problem`]) is refused at start.
//! - **Headers**: a strict Content-Security-Policy (only this server's own
//!   scripts, styles and connections; no inline code, no frames, no forms),
//!   `nosniff`, no referrer, no framing, and no caching of API answers.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
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
            // HTTP's default port: clients leave it out of `Host`.
            if port == 80 {
                hosts.extend(["localhost".into(), "127.0.0.1".into(), "[::1]".into()]);
                if let std::net::IpAddr::V4(ip) = addr.ip() {
                    if !hosts.contains(&ip.to_string()) {
                        hosts.push(ip.to_string());
                    }
                }
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

/// Equal in time independent of where, and whether in length, the inputs
/// differ: both are hashed to 32 bytes, which are compared in constant
/// time.
fn same(given: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(given)
        .as_slice()
        .ct_eq(Sha256::digest(expected).as_slice())
        .into()
}

/// Why `token` could never match a request, if it could not: the guard
/// reads `Authorization` as visible ASCII (a value with other bytes reads
/// as absent) and HTTP strips the whitespace around a header value.
/// [`Server::bind`](crate::Server::bind) refuses such a token; `flow serve`
/// checks it with the settings.
pub fn token_problem(token: &str) -> Option<&'static str> {
    if token.trim() != token {
        return Some("it begins or ends with whitespace, which HTTP strips from a header value");
    }
    if !token.is_ascii() {
        return Some("it holds a non-ASCII character, which an HTTP header does not carry as text");
    }
    if token.bytes().any(|b| !(b.is_ascii_graphic() || b == b' ')) {
        return Some("it holds a control character, which an HTTP header cannot carry");
    }
    None
}

/// The middleware: checks the request, then adds the security headers to
/// whatever the handler answered.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = match guard.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    };
    if is_api {
        response = as_json_error(&method, &path, response).await;
    }
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

/// Gives an error answer that is not JSON the API's `{"error": ...}`
/// shape, keeping its status and headers: axum's own answers (405 from
/// the router, 413 from the body limit, a body that cannot be read) are
/// plain text or empty.
async fn as_json_error(method: &Method, path: &str, response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let path = crate::catalog::clip(path);
    let message = match status {
        // The router adds `Allow` after this layer.
        StatusCode::METHOD_NOT_ALLOWED => {
            format!(
                "{method} is not allowed on {path}: the Allow header names the methods it takes"
            )
        }
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than the API's limit of {} KiB",
            crate::api::BODY_LIMIT / 1024
        ),
        _ => {
            let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                crate::catalog::clip(text)
            }
        }
    };
    let json = crate::error::json_error(status, &message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .extend(json.headers().iter().map(|(k, v)| (k.clone(), v.clone())));
    Response::from_parts(parts, json.into_body())
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
        // Without the port only on HTTP's default port.
        assert!(g
            .check(&Method::GET, &headers(&[("host", "localhost")]))
            .is_err());
    }

    /// A loopback address other than 127.0.0.1 (`--bind 127.0.0.2:8080`)
    /// answers to itself as well as to the usual names; a neighbour
    /// address does not.
    #[test]
    fn a_loopback_server_answers_to_its_own_address() {
        let g = Guard::new(None, "127.0.0.2:8080".parse().unwrap());
        for host in [
            "127.0.0.2:8080",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
        ] {
            assert!(
                g.check(&Method::GET, &headers(&[("host", host)])).is_ok(),
                "{host}"
            );
        }
        for host in ["127.0.0.3:8080", "127.0.0.2:8081", "127.0.0.2"] {
            assert!(
                g.check(&Method::GET, &headers(&[("host", host)])).is_err(),
                "{host}"
            );
        }
    }

    /// A browser says where a request comes from in `Sec-Fetch-Site`: the
    /// server's own page (`same-origin`) and a typed-in or bookmarked
    /// request (`none`) may change state; any other site may not, even
    /// one on the same registrable domain (`same-site`).
    #[test]
    fn sec_fetch_site_lets_only_the_own_page_change_state() {
        let g = Guard::new(None, "127.0.0.1:9000".parse().unwrap());
        let post = |site: &str| {
            g.check(
                &Method::POST,
                &headers(&[("host", "127.0.0.1:9000"), ("sec-fetch-site", site)]),
            )
        };
        assert!(post("same-origin").is_ok());
        assert!(post("none").is_ok());
        for site in ["same-site", "cross-site"] {
            assert!(
                matches!(post(site).unwrap_err(), ApiError::Forbidden(_)),
                "{site}"
            );
        }
    }

    /// On port 80 clients send `Host: localhost` (curl, browsers): accepted,
    /// with the port or without, and a POST's `Origin` (also port-less)
    /// matches; other hosts are still refused.
    #[test]
    fn port_80_accepts_hosts_without_the_port() {
        for bind in ["127.0.0.1:80", "127.0.0.2:80", "[::1]:80"] {
            let addr: SocketAddr = bind.parse().unwrap();
            let g = Guard::new(None, addr);
            let mut names = vec!["localhost", "127.0.0.1", "[::1]", "localhost:80"];
            let own = addr.ip().to_string();
            if addr.is_ipv4() {
                names.push(&own);
            }
            for host in names {
                assert!(
                    g.check(&Method::GET, &headers(&[("host", host)])).is_ok(),
                    "{bind}: {host}"
                );
                let post = [("host", host), ("origin", &format!("http://{host}"))];
                assert!(
                    g.check(&Method::POST, &headers(&post)).is_ok(),
                    "{bind}: {host}"
                );
            }
            for host in ["evil.example", "evil.example:80", "localhost:8080"] {
                assert!(
                    g.check(&Method::GET, &headers(&[("host", host)])).is_err(),
                    "{bind}: {host}"
                );
            }
        }
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

    #[test]
    fn tokens_no_header_can_carry_are_named() {
        for bad in [
            " abcdefgh",
            "abcdefgh ",
            "abc\tdefgh",
            "pässwörd1",
            "abc\u{7f}defgh",
        ] {
            assert!(token_problem(bad).is_some(), "{bad:?}");
        }
        for good in [
            "abcdefgh",
            "a-b_c.d~e+f/g=",
            "with inner space",
            "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        ] {
            assert_eq!(token_problem(good), None, "{good:?}");
        }
        assert!(same(b"s3cret-token", b"s3cret-token"));
        for other in [&b"s3cret-toke"[..], b"s3cret-token2", b"", b"S3cret-token"] {
            assert!(!same(other, b"s3cret-token"));
        }
    }
}
