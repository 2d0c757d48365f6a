//! Bearer tokens: an OAuth 2.0 token endpoint (`POST /token`, what a
//! service-account key file's `token_uri` names) issuing access tokens
//! that expire on the fake's clock, and the check of each API request's
//! `Authorization` header against what it issued.

use crate::clock::FakeClock;
use crate::server::{json, ok, query_pairs};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The grant a service-account key's signed JWT asks for (RFC 7523).
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An access token the endpoint handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    /// On the fake's clock.
    pub issued_at: Duration,
    pub expires_at: Duration,
}

/// Why a request's token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A token the endpoint never issued.
    Unknown,
    /// An issued token past its expiry.
    Expired,
}

impl Refusal {
    /// Google's message for it (the same for unknown and expired tokens).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            Refusal::Unknown | Refusal::Expired => "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        }
    }
}

#[derive(Default)]
struct Ledger {
    issued: Vec<IssuedToken>,
    /// Each API request's `Authorization` header ("" without one).
    authorizations: Vec<String>,
}

/// The tokens one fake issued and saw.
pub struct Tokens {
    clock: FakeClock,
    lifetime: Duration,
    ledger: Mutex<Ledger>,
}

impl Tokens {
    /// Tokens valid for `lifetime` on `clock` (Google's: one hour).
    pub fn new(clock: FakeClock, lifetime: Duration) -> Self {
        Tokens {
            clock,
            lifetime,
            ledger: Mutex::default(),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token endpoint: a form body with `grant_type` the JWT-bearer
    /// grant and an `assertion` (a signed JWT: three dot-separated parts)
    /// gets `{"access_token", "expires_in", "token_type": "Bearer"}`;
    /// anything else a 400 in OAuth's error shape.
    pub fn issue(&self, body: &[u8]) -> Response {
        let form = query_pairs(&String::from_utf8_lossy(body));
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let refuse = |error: &str, description: String| {
            json(
                StatusCode::BAD_REQUEST,
                json!({ "error": error, "error_description": description }),
            )
        };
        match field("grant_type") {
            Some(JWT_BEARER) => {}
            Some(other) => {
                return refuse(
                    "unsupported_grant_type",
                    format!("Invalid grant_type: {other}"),
                )
            }
            None => {
                return refuse(
                    "invalid_request",
                    "Missing required parameter: grant_type".into(),
                )
            }
        }
        match field("assertion") {
            Some(jwt) if jwt.split('.').count() == 3 && !jwt.split('.').any(str::is_empty) => {}
            _ => {
                return refuse(
                    "invalid_grant",
                    "Invalid JWT: the assertion is not a signed JWT".into(),
                )
            }
        }
        let now = self.clock.now();
        let mut ledger = self.ledger();
        let token = format!("ya29.fake-access-token-{}", ledger.issued.len() + 1);
        ledger.issued.push(IssuedToken {
            token: token.clone(),
            issued_at: now,
            expires_at: now + self.lifetime,
        });
        ok(json!({
            "access_token": token,
            "expires_in": self.lifetime.as_secs(),
            "token_type": "Bearer",
        }))
    }

    /// Records a request's `Authorization` header and checks it: the token
    /// must be one this endpoint issued, not expired on the fake's clock.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let now = self.clock.now();
        let mut ledger = self.ledger();
        ledger.authorizations.push(authorization.clone());
        let Some(token) = authorization.strip_prefix("Bearer ") else {
            return Err(Refusal::Missing);
        };
        match ledger.issued.iter().find(|t| t.token == token) {
            None => Err(Refusal::Unknown),
            Some(t) if now >= t.expires_at => Err(Refusal::Expired),
            Some(_) => Ok(()),
        }
    }

    /// Every token issued so far, in order.
    pub fn issued(&self) -> Vec<IssuedToken> {
        self.ledger().issued.clone()
    }

    /// Each API request's `Authorization` header so far, in order (`""`
    /// for none).
    pub fn authorizations(&self) -> Vec<String> {
        self.ledger().authorizations.clone()
    }
}
