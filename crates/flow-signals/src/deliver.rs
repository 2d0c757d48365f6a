//! Delivering one notice to one `[[notify]]` entry: each attempt bounded
//! by the entry's timeout, failures tried again after a delay doubled each
//! time, a refusal that a retry cannot change (an HTTP 4xx other than 408
//! and 429, a permanent SMTP error) not retried. What is said about a
//! failure never holds a secret (no URL: a Slack webhook's URL is one).

use crate::notify::{hex, Notice};
use flow_core::notify::{Delivery, NotifySecret, NotifySpec, SmtpTls};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::path::Path;
use std::time::Duration;

/// The header carrying `sha256=HEX` of the body's HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "X-Flow-Signature-256";
/// The header carrying the notice's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// The header naming the event.
pub const EVENT_HEADER: &str = "X-Flow-Event";

/// How a delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Delivered.
    pub delivered: bool,
    /// Attempts made.
    pub attempts: u32,
    /// The last answer or error.
    pub detail: String,
}

/// One attempt's failure: retry it or not.
pub(crate) struct Failed {
    pub(crate) retry: bool,
    pub(crate) detail: String,
}

/// `sha256=HEX` of `body` keyed with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Delivers `notice` as `spec` says, with its retries.
pub async fn deliver(spec: &NotifySpec, notice: &Notice, http: &reqwest::Client) -> Outcome {
    retrying(spec.delivery(), || once(spec, notice, http)).await
}

/// Runs `attempt` until it succeeds, fails for good, or has been tried
/// `delivery.retries` more times, each attempt bounded by
/// `delivery.timeout`, the waits between them doubling (every exporter's
/// deliveries go through here).
pub(crate) async fn retrying<F, Fut>(delivery: Delivery, mut attempt: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, Failed>>,
{
    let mut delay = delivery.retry_delay;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let attempt = tokio::time::timeout(delivery.timeout, attempt()).await;
        let failed = match attempt {
            Ok(Ok(detail)) => {
                return Outcome {
                    delivered: true,
                    attempts,
                    detail,
                }
            }
            Ok(Err(failed)) => failed,
            Err(_) => Failed {
                retry: true,
                detail: format!("no answer within {:?}", delivery.timeout),
            },
        };
        if !failed.retry || attempts > delivery.retries {
            return Outcome {
                delivered: false,
                attempts,
                detail: failed.detail,
            };
        }
        tokio::time::sleep(delay).await;
        delay = delay.saturating_mul(2);
    }
}

async fn once(
    spec: &NotifySpec,
    notice: &Notice,
    http: &reqwest::Client,
) -> Result<String, Failed> {
    match spec {
        NotifySpec::Webhook { url, secret, .. } => {
            let body = serde_json::to_vec(notice).map_err(|e| Failed {
                retry: false,
                detail: format!("cannot encode the notice: {e}"),
            })?;
            let mut request = http
                .post(url.as_str())
                .header("content-type", "application/json")
                .header(EVENT_HEADER, notice.event)
                .header(IDEMPOTENCY_HEADER, &notice.idempotency_key);
            if let Some(secret) = secret {
                request = request.header(SIGNATURE_HEADER, signature(&value(secret)?, &body));
            }
            post(request.body(body)).await
        }
        NotifySpec::Slack { url, .. } => {
            let body = serde_json::json!({ "text": notice.text() });
            post(
                http.post(value(url)?)
                    .header(IDEMPOTENCY_HEADER, &notice.idempotency_key)
                    .json(&body),
            )
            .await
        }
        NotifySpec::Email {
            host,
            port,
            tls,
            username,
            password,
            ca_file,
            from,
            to,
            ..
        } => {
            let credentials = match (username, password) {
                (Some(user), Some(password)) => Some((user.clone(), value(password)?)),
                _ => None,
            };
            mail(
                Smtp {
                    host,
                    port: *port,
                    tls: *tls,
                    credentials,
                    ca_file: ca_file.as_deref(),
                    timeout: spec.delivery().timeout,
                },
                from,
                to,
                notice,
            )
            .await
        }
    }
}

pub(crate) fn value(secret: &NotifySecret) -> Result<String, Failed> {
    secret.value().map_err(|detail| Failed {
        retry: false,
        detail,
    })
}

pub(crate) async fn post(request: reqwest::RequestBuilder) -> Result<String, Failed> {
    let response = request.send().await.map_err(|e| Failed {
        retry: true,
        detail: e.without_url().to_string(),
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(format!("HTTP {}", status.as_u16()));
    }
    let retry = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
    Err(Failed {
        retry,
        detail: format!("HTTP {}", status.as_u16()),
    })
}

struct Smtp<'a> {
    host: &'a str,
    port: Option<u16>,
    tls: SmtpTls,
    credentials: Option<(String, String)>,
    ca_file: Option<&'a Path>,
    timeout: Duration,
}

/// The certificates of the PEM file `path`, as roots to trust besides the
/// system's, checked the way a connection will use them (each one a
/// certificate rustls takes as a trust anchor). The settings check it at
/// load; each delivery reads it again. The error says what is wrong, not
/// where (the caller names the file and the place).
pub fn trusted_roots(
    path: &Path,
) -> Result<Vec<lettre::transport::smtp::client::Certificate>, String> {
    use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let ders = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM file of certificates: {e}", path.display()))?;
    if ders.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    let mut roots = Vec::with_capacity(ders.len());
    for der in ders {
        let root =
            Certificate::from_der(der.to_vec()).map_err(|e| format!("{}: {e}", path.display()))?;
        // The store a connection builds: a certificate that does not parse
        // as a trust anchor is refused here, not at the first delivery.
        TlsParameters::builder("localhost".into())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(root.clone())
            .build_rustls()
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
        roots.push(root);
    }
    Ok(roots)
}

async fn mail(
    smtp: Smtp<'_>,
    from: &str,
    to: &[String],
    notice: &Notice,
) -> Result<String, Failed> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let refused = |detail: String| Failed {
        retry: false,
        detail,
    };
    let mut message = Message::builder()
        .from(
            from.parse()
                .map_err(|e| refused(format!("from {from:?}: {e}")))?,
        )
        .subject(format!("[flow] {}", notice.headline()))
        .message_id(Some(format!("<{}@flow>", notice.idempotency_key)))
        .header(ContentType::TEXT_PLAIN);
    for address in to {
        message = message.to(address
            .parse()
            .map_err(|e| refused(format!("to {address:?}: {e}")))?);
    }
    let message = message
        .body(notice.text())
        .map_err(|e| refused(format!("cannot build the mail: {e}")))?;
    let mut transport = match smtp.tls {
        SmtpTls::Starttls => {
            // lettre's `starttls_relay`, with the CA file's roots added.
            let mut parameters = TlsParameters::builder(smtp.host.to_string());
            if let Some(ca_file) = smtp.ca_file {
                for root in trusted_roots(ca_file).map_err(|e| refused(format!("ca_file: {e}")))? {
                    parameters = parameters.add_root_certificate(root);
                }
            }
            let parameters = parameters
                .build_rustls()
                .map_err(|e| refused(format!("SMTP server {}: {e}", smtp.host)))?;
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host)
                .port(smtp.port.unwrap_or(587))
                .tls(Tls::Required(parameters))
        }
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host)
            .port(smtp.port.unwrap_or(25)),
    }
    .timeout(Some(smtp.timeout));
    if let Some((user, password)) = smtp.credentials {
        transport = transport.credentials(Credentials::new(user, password));
    }
    let response = transport.build().send(message).await.map_err(|e| Failed {
        retry: !e.is_permanent(),
        detail: format!("SMTP: {e}"),
    })?;
    Ok(format!("SMTP {}", response.code()))
}
