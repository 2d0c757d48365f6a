//! Why the store could not be opened ([`MongoError`]), and how driver
//! errors become [`StoreError`]s without the URI's password.

use crate::odm::OdmError;
use crate::{InvalidSetting, MongoStore};
use flow_core::{FlowKey, StoreError};
use std::time::Duration;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MongoError {
    /// A setting (URI or database name) is invalid.
    #[error("[store] {0}")]
    Setting(#[from] InvalidSetting),
    /// No server answered within the server selection timeout.
    #[error("cannot reach MongoDB at {hosts} within {timeout:?}: {message}")]
    Unreachable {
        /// The hosts of the URI (without credentials).
        hosts: String,
        /// The server selection timeout that passed.
        timeout: Duration,
        /// The driver's reason.
        message: String,
    },
    /// The server refused the URI's credentials.
    #[error("authentication failed {} on {hosts}: {message}", user_text(.user))]
    Authentication {
        /// The URI's user name, if it has one (never the password).
        user: Option<String>,
        /// The hosts of the URI (without credentials).
        hosts: String,
        /// The driver's reason.
        message: String,
    },
    /// A start-up call (ping, `hello`, index creation) failed.
    #[error("MongoDB at {hosts}: {operation} failed: {message}")]
    Setup {
        /// The hosts of the URI (without credentials).
        hosts: String,
        /// The call, e.g. `create index`.
        operation: &'static str,
        /// The driver's reason.
        message: String,
    },
}

pub(crate) fn user_text(user: &Option<String>) -> String {
    match user {
        Some(user) => format!("for user {user}"),
        None => "(no user name in the URI)".to_string(),
    }
}

/// True when the driver says the server refused the credentials: its
/// authentication error, or a command failing with `AuthenticationFailed`
/// (code 18).
pub(crate) fn is_auth_failure(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, mongodb::error::ErrorKind::Authentication { .. })
        || command_code(e) == Some(18)
}

/// The error for a failed first call to the server: a refused login when
/// the driver says so (`auth_failed`), else an unreachable server.
/// `message` is the driver's, already scrubbed of the password.
pub(crate) fn first_call_failed(
    auth_failed: bool,
    user: Option<&str>,
    hosts: &str,
    timeout: Duration,
    message: String,
) -> MongoError {
    if auth_failed {
        MongoError::Authentication {
            user: user.map(str::to_string),
            hosts: hosts.to_string(),
            message,
        }
    } else {
        MongoError::Unreachable {
            hosts: hosts.to_string(),
            timeout,
            message,
        }
    }
}

/// A driver error as one short line: its kind and what the server said
/// (code name, code, message), or for a server selection that timed out,
/// each server's address and why it could not be used. Never the driver's
/// whole `Display`, which appends `labels`, `source` and `server
/// response`, and for a selection timeout the whole topology description.
pub(crate) fn driver_message(e: &mongodb::error::Error) -> String {
    use mongodb::error::{ErrorKind, WriteFailure};
    let coded = |what: &str, name: Option<&str>, code: i32, message: &str| match name {
        Some(name) if !name.is_empty() => format!("{what}: {name} ({code}): {message}"),
        _ => format!("{what}: code {code}: {message}"),
    };
    match &*e.kind {
        ErrorKind::Command(c) => coded("command failed", Some(&c.code_name), c.code, &c.message),
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            coded("write failed", w.code_name.as_deref(), w.code, &w.message)
        }
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => coded(
            "write concern failed",
            Some(&w.code_name),
            w.code,
            &w.message,
        ),
        ErrorKind::InsertMany(i) => {
            let first = i.write_errors.as_ref().and_then(|errors| errors.first());
            match (first, &i.write_concern_error) {
                (Some(w), _) => coded(
                    &format!("insert failed at document {}", w.index),
                    w.code_name.as_deref(),
                    w.code,
                    &w.message,
                ),
                (None, Some(w)) => coded(
                    "write concern failed",
                    Some(&w.code_name),
                    w.code,
                    &w.message,
                ),
                (None, None) => "insert failed".to_string(),
            }
        }
        ErrorKind::ServerSelection { message, .. } => server_selection(message),
        // The kind alone: its Display, without the error's labels and sources.
        kind => kind.to_string(),
    }
}

/// "Server selection timeout: No available servers (ADDRESS: why, ...)"
/// out of the driver's message, which continues with the topology
/// description (`Topology: { Type: ..., Servers: [ { Address: A, Type: T,
/// Error: Kind: WHY, labels: {...}, source: None, server response: None }
/// ] }`).
fn server_selection(message: &str) -> String {
    let Some((head, topology)) = message.split_once(". Topology:") else {
        return message.to_string();
    };
    let servers: Vec<String> = topology
        .split("{ Address: ")
        .skip(1)
        .map(|server| {
            let address = server.split(',').next().unwrap_or_default().trim();
            let why = server
                .split_once("Error: ")
                .map(|(_, rest)| rest.split(", labels:").next().unwrap_or(rest))
                .map(|why| why.strip_prefix("Kind: ").unwrap_or(why).trim())
                .filter(|why| !why.is_empty());
            match why {
                Some(why) => format!("{address}: {why}"),
                None => address.to_string(),
            }
        })
        .collect();
    if servers.is_empty() {
        head.to_string()
    } else {
        format!("{head} ({})", servers.join("; "))
    }
}

/// A failure's text for a [`StoreError`] message: a driver error made
/// short ([`driver_message`]), anything else as it displays.
pub(crate) trait Reason {
    fn reason(&self) -> String;
}

impl Reason for mongodb::error::Error {
    fn reason(&self) -> String {
        driver_message(self)
    }
}

impl Reason for OdmError {
    fn reason(&self) -> String {
        match self {
            OdmError::Fenced => "refused by a newer lease".to_string(),
            OdmError::Driver(e) => driver_message(e),
            OdmError::Encode(m) => m.clone(),
        }
    }
}

impl Reason for String {
    fn reason(&self) -> String {
        self.clone()
    }
}

impl Reason for serde_json::Error {
    fn reason(&self) -> String {
        self.to_string()
    }
}

impl Reason for &str {
    fn reason(&self) -> String {
        (*self).to_string()
    }
}

/// The server's error code of a command error.
pub(crate) fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

impl MongoStore {
    pub(crate) fn scrub(&self, text: String) -> String {
        match &self.password {
            Some(p) => text.replace(p.as_str(), "***"),
            None => text,
        }
    }

    pub(crate) fn op_error(
        &self,
        operation: &'static str,
        key: impl ToString,
        e: impl Reason,
    ) -> StoreError {
        StoreError::Operation {
            operation,
            key: key.to_string(),
            message: self.scrub(e.reason()),
        }
    }

    pub(crate) fn odm_error(
        &self,
        operation: &'static str,
        key: &FlowKey,
        e: OdmError,
    ) -> StoreError {
        match e {
            OdmError::Fenced => StoreError::Operation {
                operation,
                key: key.to_string(),
                message: "refused by a newer lease".into(),
            },
            OdmError::Driver(e) => self.op_error(operation, key, e),
            OdmError::Encode(m) => self.op_error(operation, key, m),
        }
    }

    pub(crate) fn corrupt(
        &self,
        what: &'static str,
        key: impl ToString,
        message: String,
    ) -> StoreError {
        StoreError::Corrupt {
            what,
            key: key.to_string(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    pub(crate) fn a_refused_login_names_the_user_and_the_hosts() {
        let e = first_call_failed(
            true,
            Some("flow"),
            "db1:27017, db2:27017",
            Duration::from_secs(5),
            "SCRAM failure: Authentication failed.".into(),
        );
        assert!(matches!(e, MongoError::Authentication { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "authentication failed for user flow on db1:27017, db2:27017: \
             SCRAM failure: Authentication failed."
        );
        let e = first_call_failed(true, None, "db1:27017", Duration::from_secs(5), "x".into());
        assert_eq!(
            e.to_string(),
            "authentication failed (no user name in the URI) on db1:27017: x"
        );
    }

    #[test]
    pub(crate) fn any_other_first_failure_is_an_unreachable_server() {
        let e = first_call_failed(
            false,
            Some("flow"),
            "db1:27017",
            Duration::from_secs(5),
            "Server selection timeout".into(),
        );
        assert!(matches!(e, MongoError::Unreachable { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("cannot reach MongoDB at db1:27017"),
            "{e}"
        );
    }

    /// The driver's text of a selection timeout on a closed port (3.9.1),
    /// made short: the address and why, none of the topology's fields.
    #[test]
    fn a_selection_timeout_names_each_server_and_why_only() {
        let driver = "Server selection timeout: No available servers. Topology: { Type: Unknown, Servers: [ { Address: 127.0.0.1:9, Type: Unknown, Error: Kind: I/O error: Connection refused (os error 111), labels: {\"SystemOverloadedError\", \"RetryableError\"}, source: None, server response: None }, { Address: db2:27017, Type: Unknown } ] }";
        assert_eq!(
            server_selection(driver),
            "Server selection timeout: No available servers (127.0.0.1:9: I/O error: Connection refused (os error 111); db2:27017)"
        );
        let reply = doc! { "ok": 0, "code": 13, "codeName": "Unauthorized", "errmsg": "not authorized on flow" };
        let command: mongodb::error::CommandError =
            bson::deserialize_from_document(reply).expect("a command error");
        let e = mongodb::error::Error::from(mongodb::error::ErrorKind::Command(command));
        assert_eq!(
            driver_message(&e),
            "command failed: Unauthorized (13): not authorized on flow"
        );
    }

    #[test]
    pub(crate) fn authentication_failed_command_errors_count_as_refused_logins() {
        // The driver's own authentication error kind cannot be built outside
        // it (the nx-27017 test gets a real one); a server's
        // `AuthenticationFailed` command error (code 18) can.
        let reply = doc! { "ok": 0, "code": 18, "codeName": "AuthenticationFailed", "errmsg": "Authentication failed." };
        let command: mongodb::error::CommandError =
            bson::deserialize_from_document(reply).expect("a command error");
        let e = mongodb::error::Error::from(mongodb::error::ErrorKind::Command(command));
        assert!(is_auth_failure(&e), "{e}");
        let reply =
            doc! { "ok": 0, "code": 13, "codeName": "Unauthorized", "errmsg": "not authorized" };
        let command: mongodb::error::CommandError =
            bson::deserialize_from_document(reply).expect("a command error");
        let e = mongodb::error::Error::from(mongodb::error::ErrorKind::Command(command));
        assert!(!is_auth_failure(&e), "{e}");
    }
}
