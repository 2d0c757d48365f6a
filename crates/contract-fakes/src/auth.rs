//! Bearer tokens: an OAuth 2.0 token endpoint (`POST /token`, what a
//! service-account key file's `token_uri` names) issuing access tokens
//! that expire on the fake's clock, and the check of each API request's
//! `Authorization` header against what it issued; and the HTTP basic login
//! of a gateway ([`BasicLogin`]: HDInsight's, in front of Livy and WebHCat).

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
        self.grant("ya29.fake-access-token")
    }

    /// Mints a token (`PREFIX-N`) valid for the lifetime and answers it as
    /// OAuth's `{"access_token", "expires_in", "token_type": "Bearer"}`.
    fn grant(&self, prefix: &str) -> Response {
        let now = self.clock.now();
        let mut ledger = self.ledger();
        let token = format!("{prefix}-{}", ledger.issued.len() + 1);
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

    /// Microsoft Entra ID's token endpoint for the client-credentials grant
    /// (`POST /TENANT/oauth2/v2.0/token`, RFC 6749 4.4): a form body with
    /// `grant_type=client_credentials`, `scope` the resource's `/.default`,
    /// and the application's `client_id` and `client_secret` (`client`)
    /// gets a token; anything else a 400 or 401 in OAuth's error shape with
    /// Entra's `AADSTS` codes.
    pub fn issue_client_credentials(&self, body: &[u8], client: &ClientSecret) -> Response {
        let form = query_pairs(&String::from_utf8_lossy(body));
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let refuse = |status: StatusCode, error: &str, description: String| {
            json(
                status,
                json!({ "error": error, "error_description": description }),
            )
        };
        match field("grant_type") {
            Some("client_credentials") => {}
            Some(other) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    format!("AADSTS70003: The app requested an unsupported grant type '{other}'."),
                )
            }
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "AADSTS900144: The request body must contain the following parameter: 'grant_type'.".into(),
                )
            }
        }
        match field("scope") {
            Some(scope) if scope.split(' ').any(|s| s == client.scope) => {}
            other => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    format!(
                        "AADSTS1002012: The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
                        other.unwrap_or("")
                    ),
                )
            }
        }
        if field("client_id") != Some(client.client_id.as_str()) {
            return refuse(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                format!(
                    "AADSTS700016: Application with identifier '{}' was not found in the directory.",
                    field("client_id").unwrap_or("")
                ),
            );
        }
        if field("client_secret") != Some(client.secret.as_str()) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.".into(),
            );
        }
        self.grant("eyJ0eXAiOiJKV1QifQ.fake-arm-access-token")
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

/// A throwaway RSA key made for these tests only: it signs the JWT a
/// client's service-account flow sends to a fake's token endpoint.
pub const TEST_PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCaR3bLTxFIoQ0z\nmOgvTh53UIhbERupsIBmAn/Gr1tpOXkg1mCQrWEhSKBoQioDJWApdD5tM7SsP/EO\nmacxEbJ/TIMrybvoPmZ+qnUgFV8BBo0nI49e3wotoHHcRn9C1HzkvwskhKgxwZbN\n0BfX5dpSGOZO0B/7cnIAWk2SGmLkP+m5KX5Sh2473vTilZgehkiw/3kLElqukSn3\ncvd0llr7ro22WWWEPZ/XzI0HCpcIUi97aPCVaxOlTRw9lsbyw3l37F1arzz9e9J1\nWxhH6yES/g7LlSAO2YLJK/xeayMIvWwwVCMslxziSwTInU9hFvkZ/x4aAcj839S6\nu9aRfoj7AgMBAAECggEABjpLR9K1wmZJ56LNAJfZL/zOvEpZAQUQcc25BbavbHR2\n+MXemQh+qr7JRtwg4QahtpqsKHFVYjykiO/X6Wmq+GuIwfw/OxVFwugzmStzrdFr\nYkCTuYMsYIIhBoDMA1Ebh4pUs1EtjvCfG0jCpaLwKK87oMPS/q30fyImDndFNax0\nwVHE1pSuebJ09eo5pvh4wt7fEoa2esraS0aNvQOd3Pwes1L0PQFvKJRwRx846Yfm\nVgR0+DY5ZkQgBwixNOz5TiMVtzlzZdEOSAjJZsQUte4nvR8omRMyvoSCvl7shy5+\ntJgz0kOuj6vpyEbAbse1E+l/8qJb+JDDU4Oq84zx0QKBgQDKFwAY3U4vTUUjDcxo\nnHZSSLz7dBiR0QeyXx5lri7JiUlboOiVQT4Rcfn0ZwjVw4NAhL5ODxze88IWATIk\nmA9hwEYXPPUudgollV8F5GUaaZiHOmRU/zy7HfaGx1hEY4PBNuHvcyJ/z9v4mvME\n6eAUDzYzejiE70Jar1PCBtvtsQKBgQDDb2eN+EtJovuvcUpQ7CgVb8t4qhuzhwri\n2Z17m8rQ0fSWiNJZh/orc3UhybbBoaCLyMUmjGIUtm1u7HD/SeWRMvFU8KpFkHKu\nj0YCRZNVem29DZiORJzYiK+zVvLZaONclWWU+sYPkBbx1tACnL800NyS8HYI+8mE\nRm+I4lEwawKBgAE6+J4uIr64+rXG7LqqUTIZDUV+pHOm0SQt3hKCZ/iEJHUxWpkm\nB4m1pu7s/anHgfIPnNT+1I8q7sCRi0ubvWQ79nFHxrpcr50g9q4jgNYTVIFmQpwd\n3bHJ8elKJ2hrLq8rdV6u1cPvcQhncRlTjzCwEwVnNhbhGgdRT/I7dnVRAoGAJ+Zi\nufVrSYlg4Ry8E3FjbZz5aZUxOqHjcxUCte3EpoV27hTY/TZpuN1FmLRZ/4ZEBMXk\nmk4m6Bumk/LpzvUDTXWdF75axQEMqN7PaD9UKStppCNWdhVEAGFHndGumvxzDr/h\nkVzxetPsG0vEBASEdP//SHCXaJYfOkY3Fzc9ZCkCgYBRsaIowpleGPiH8ZgHBZnW\n9HGuGnKfb0VNsXjrem6RD6briPBOxqCnyBRApYBn1UMLwIsE+A7npLxg4kOkNI0h\n5K0gZvH3YD7RDdVtSV3kSe0Z7cKNZgrFcaQ+Dvke4Mg3NjuBhKc7ePAsElnEJx/e\nxykQRV9I/srA5gzgiqW21A==\n-----END PRIVATE KEY-----\n";

/// A service-account key file's JSON whose `token_uri` is `token_uri` (a
/// fake's `/token`), signed with [`TEST_PRIVATE_KEY`].
pub fn service_account_key(token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": "test",
        "private_key": TEST_PRIVATE_KEY,
        "client_email": "flow@proj.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    })
    .to_string()
}

/// An application registered in Microsoft Entra ID with a client secret,
/// and the scope its tokens are for (ARM's
/// `https://management.azure.com/.default`).
#[derive(Debug, Clone)]
pub struct ClientSecret {
    pub client_id: String,
    pub secret: String,
    pub scope: String,
}

/// A gateway's HTTP basic login (`Authorization: Basic BASE64(user:password)`).
#[derive(Debug, Clone)]
pub struct BasicLogin {
    expected: String,
    realm: &'static str,
}

impl BasicLogin {
    /// The login `user`:`password`, refused in `realm`'s name.
    pub fn new(user: &str, password: &str, realm: &'static str) -> Self {
        BasicLogin {
            expected: format!("Basic {}", base64(&format!("{user}:{password}"))),
            realm,
        }
    }

    /// `None` when the request carries the login, else the 401 (with
    /// `WWW-Authenticate`) in the API's error shape.
    pub fn check(&self, headers: &HeaderMap, shape: crate::errors::ErrorShape) -> Option<Response> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given == Some(self.expected.as_str()) {
            return None;
        }
        let mut refused = shape(StatusCode::UNAUTHORIZED, "", "Unauthorized".into());
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            format!("Basic realm=\"{}\"", self.realm)
                .parse()
                .expect("a header value"),
        );
        Some(refused)
    }
}

/// Standard base64 of `text`.
fn base64(text: &str) -> String {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod basic_tests {
    use super::*;

    #[test]
    fn basic_login_is_base64() {
        assert_eq!(base64("admin:pw"), "YWRtaW46cHc=");
        assert_eq!(base64("a"), "YQ==");
    }
}
