//! What a flow file or the settings say about signals: `[[notify]]`
//! entries (who is told what) and a flow's `sla`. Parsed and checked where
//! the file is read (a wrong entry is refused at `file:line:col`);
//! delivered by the `flow-signals` crate.

use crate::context::MIN_SECRET_LEN;
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// The events a notification can be sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A run ended with the flow `state_invalid`.
    Failure,
    /// A run ended with the flow processed (or noop).
    Success,
    /// A run succeeded after the flow's previous run at that timeperiod
    /// failed.
    Recovered,
    /// The flow's SLA passed without the run processed.
    SlaMiss,
    /// A run ended leaving clusters it could not terminate.
    ClusterLeftUp,
    /// A run stopped because another engine took its lease.
    LeaseLost,
}

impl NotifyEvent {
    /// The name written in `on` and sent in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Failure => "failure",
            NotifyEvent::Success => "success",
            NotifyEvent::Recovered => "recovered",
            NotifyEvent::SlaMiss => "sla_miss",
            NotifyEvent::ClusterLeftUp => "cluster_left_up",
            NotifyEvent::LeaseLost => "lease_lost",
        }
    }
}

impl fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret of a notification (a webhook's signing key, an SMTP
/// password): `"env:VAR"`, read from the environment when delivered, or
/// the value itself. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct NotifySecret(String);

impl TryFrom<String> for NotifySecret {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        if let Some(var) = text.strip_prefix("env:") {
            if var.is_empty() {
                return Err("\"env:\" names no environment variable".into());
            }
        } else if text.chars().count() < MIN_SECRET_LEN {
            return Err(format!(
                "a secret is at least {MIN_SECRET_LEN} characters long (or \"env:VAR\")"
            ));
        }
        Ok(NotifySecret(text))
    }
}

impl NotifySecret {
    /// The environment variable it is read from, for `"env:VAR"`.
    pub fn variable(&self) -> Option<&str> {
        self.0.strip_prefix("env:")
    }

    /// The value (read from the environment for `"env:VAR"`).
    pub fn value(&self) -> Result<String, String> {
        match self.0.strip_prefix("env:") {
            Some(var) => {
                std::env::var(var).map_err(|_| format!("the environment variable {var} is not set"))
            }
            None => Ok(self.0.clone()),
        }
    }
}

impl fmt::Debug for NotifySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.strip_prefix("env:") {
            Some(var) => write!(f, "env:{var}"),
            None => f.write_str("***"),
        }
    }
}

/// An `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HttpUrl(String);

impl TryFrom<String> for HttpUrl {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(HttpUrl(text)),
            _ => Err(format!("{text:?} is not an http:// or https:// URL")),
        }
    }
}

impl HttpUrl {
    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// STARTTLS, required (the default).
    #[default]
    Starttls,
    /// No TLS: for a relay on this machine or a trusted network only.
    None,
}

/// One `[[notify]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum NotifySpec {
    /// An HTTP POST of the run's facts as JSON, signed with HMAC-SHA256.
    Webhook {
        /// The events it is sent on.
        on: Vec<NotifyEvent>,
        /// Where it is posted.
        url: HttpUrl,
        /// The key of the `X-Flow-Signature-256` header; none: unsigned.
        secret: Option<NotifySecret>,
        /// Per attempt (default 10 s).
        #[serde(default, with = "humantime_serde")]
        timeout: Option<Duration>,
        /// Attempts after the first (default 3).
        retries: Option<u32>,
        /// The first wait between attempts, doubled each time (default 1 s).
        #[serde(default, with = "humantime_serde")]
        retry_delay: Option<Duration>,
    },
    /// A Slack incoming webhook's message.
    Slack {
        /// The events it is sent on.
        on: Vec<NotifyEvent>,
        /// The incoming webhook's URL (a secret of its own: keep it in
        /// `"env:VAR"`).
        url: NotifySecret,
        /// Per attempt (default 10 s).
        #[serde(default, with = "humantime_serde")]
        timeout: Option<Duration>,
        /// Attempts after the first (default 3).
        retries: Option<u32>,
        /// The first wait between attempts, doubled each time (default 1 s).
        #[serde(default, with = "humantime_serde")]
        retry_delay: Option<Duration>,
    },
    /// A mail through an SMTP server.
    Email {
        /// The events it is sent on.
        on: Vec<NotifyEvent>,
        /// The SMTP server's host name.
        host: String,
        /// Its port; default 587 with STARTTLS, 25 without.
        port: Option<u16>,
        /// `"starttls"` (default) or `"none"`.
        #[serde(default)]
        tls: SmtpTls,
        /// The SMTP user, if the server wants a login.
        username: Option<String>,
        /// Its password.
        password: Option<NotifySecret>,
        /// A PEM file of CA certificates trusted, besides the system's
        /// roots, for the server's certificate under STARTTLS (a relay
        /// with a private CA); a relative path is the settings file's.
        /// Only in the settings: which CAs to trust is the machine's.
        ca_file: Option<std::path::PathBuf>,
        /// The sender address.
        from: String,
        /// The recipients.
        to: Vec<String>,
        /// Per attempt (default 10 s).
        #[serde(default, with = "humantime_serde")]
        timeout: Option<Duration>,
        /// Attempts after the first (default 3).
        retries: Option<u32>,
        /// The first wait between attempts, doubled each time (default 1 s).
        #[serde(default, with = "humantime_serde")]
        retry_delay: Option<Duration>,
    },
}

/// How hard a delivery is tried: each attempt times out after `timeout`;
/// a failed one is tried again `retries` times, after `retry_delay`,
/// doubled each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// The first wait between attempts.
    pub retry_delay: Duration,
}

impl Delivery {
    /// The longest one delivery can take: every attempt timing out and
    /// every wait between them (what `flow run` waits at most, at its
    /// end, for deliveries still going).
    pub fn longest(&self) -> Duration {
        let mut total = self.timeout;
        let mut delay = self.retry_delay;
        for _ in 0..self.retries {
            total = total.saturating_add(delay).saturating_add(self.timeout);
            delay = delay.saturating_mul(2);
        }
        total
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            timeout: Duration::from_secs(10),
            retries: 3,
            retry_delay: Duration::from_secs(1),
        }
    }
}

impl NotifySpec {
    /// The events it is sent on.
    pub fn on(&self) -> &[NotifyEvent] {
        match self {
            NotifySpec::Webhook { on, .. }
            | NotifySpec::Slack { on, .. }
            | NotifySpec::Email { on, .. } => on,
        }
    }

    /// `webhook`, `slack` or `email`.
    pub fn kind(&self) -> &'static str {
        match self {
            NotifySpec::Webhook { .. } => "webhook",
            NotifySpec::Slack { .. } => "slack",
            NotifySpec::Email { .. } => "email",
        }
    }

    /// Its delivery tuning.
    pub fn delivery(&self) -> Delivery {
        let (timeout, retries, retry_delay) = match self {
            NotifySpec::Webhook {
                timeout,
                retries,
                retry_delay,
                ..
            }
            | NotifySpec::Slack {
                timeout,
                retries,
                retry_delay,
                ..
            }
            | NotifySpec::Email {
                timeout,
                retries,
                retry_delay,
                ..
            } => (timeout, retries, retry_delay),
        };
        let default = Delivery::default();
        Delivery {
            timeout: timeout.unwrap_or(default.timeout),
            retries: retries.unwrap_or(default.retries),
            retry_delay: retry_delay.unwrap_or(default.retry_delay),
        }
    }

    /// What is wrong with an entry that parsed (checked by the loaders,
    /// which add the place).
    pub fn problem(&self) -> Option<String> {
        if self.on().is_empty() {
            return Some(format!(
                "[[notify]] kind = \"{}\" has no events in `on` (any of failure, success, recovered, sla_miss, cluster_left_up, lease_lost)",
                self.kind()
            ));
        }
        if self.delivery().timeout.is_zero() {
            return Some("[[notify]] timeout must not be zero".into());
        }
        if let NotifySpec::Email {
            to,
            username,
            password,
            tls,
            ca_file,
            ..
        } = self
        {
            if ca_file.is_some() && *tls == SmtpTls::None {
                return Some(
                    "[[notify]] kind = \"email\": ca_file is for tls = \"starttls\" (with tls = \"none\" no certificate is checked)".into(),
                );
            }
            if to.is_empty() {
                return Some("[[notify]] kind = \"email\" has no recipients in `to`".into());
            }
            if username.is_some() != password.is_some() {
                return Some(
                    "[[notify]] kind = \"email\": username and password go together".into(),
                );
            }
        }
        None
    }
}

/// When a flow run is due processed: `sla = "2h"` counts from the end of
/// the run's timeperiod (the default) or, with `sla_from = "run_start"`,
/// from the run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sla {
    /// How long after `from`.
    pub within: Duration,
    /// Where it counts from.
    pub from: SlaFrom,
}

/// Where an [`Sla`] counts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaFrom {
    /// The end of the run's timeperiod.
    #[default]
    PeriodEnd,
    /// The start of the run.
    RunStart,
}

/// What a flow file says about its signals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowSignals {
    /// Its `[[notify]]` entries (besides the settings' own).
    pub notify: Vec<NotifySpec>,
    /// Its `sla`.
    pub sla: Option<Sla>,
    /// The datasets its steps declare (`inputs`, `outputs`), by step name;
    /// steps that declare none are absent.
    pub datasets: std::collections::BTreeMap<String, crate::lineage::StepDatasets>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_delivery_is_every_attempt_timing_out_and_every_wait() {
        // 10 s, then 1 s + 10 s, 2 s + 10 s, 4 s + 10 s (the book's 47 s).
        assert_eq!(Delivery::default().longest(), Duration::from_secs(47));
        let once = Delivery {
            retries: 0,
            ..Delivery::default()
        };
        assert_eq!(once.longest(), Duration::from_secs(10));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        notify: Vec<NotifySpec>,
    }

    #[test]
    fn entries_parse_and_unknown_keys_are_refused_at_their_place() {
        let file: File = toml::from_str(
            "[[notify]]\nkind = \"webhook\"\non = [\"failure\", \"recovered\"]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"env:HOOK_KEY\"\nretries = 5\n\n\
             [[notify]]\nkind = \"email\"\non = [\"sla_miss\"]\nhost = \"127.0.0.1\"\ntls = \"none\"\nfrom = \"flow@example.org\"\nto = [\"ops@example.org\"]\n",
        )
        .unwrap();
        assert_eq!(
            file.notify[0].on(),
            [NotifyEvent::Failure, NotifyEvent::Recovered]
        );
        assert_eq!(file.notify[0].delivery().retries, 5);
        assert_eq!(file.notify[1].delivery(), Delivery::default());
        assert!(file.notify.iter().all(|n| n.problem().is_none()));
        assert_eq!(
            format!(
                "{:?}",
                NotifySecret::try_from("s3cr3t-value".to_string()).unwrap()
            ),
            "***"
        );

        let e = toml::from_str::<File>(
            "[[notify]]\nkind = \"webhook\"\non = [\"failure\"]\nurl = \"http://h/x\"\nsecrett = \"x\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("secrett"), "{e}");
        assert!(e.span().is_some());
        let e = toml::from_str::<File>(
            "[[notify]]\nkind = \"webhook\"\non = [\"failur\"]\nurl = \"http://h/x\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("failur"), "{e}");
        let e = toml::from_str::<File>(
            "[[notify]]\nkind = \"webhook\"\non = [\"failure\"]\nurl = \"ftp://h/x\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not an http"), "{e}");
        let e = toml::from_str::<File>(
            "[[notify]]\nkind = \"slack\"\non = [\"failure\"]\nurl = \"short\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least 8"), "{e}");
    }
}
