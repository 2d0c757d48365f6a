//! Connection settings: the URI (a secret: its password never reaches a
//! log, an error or `Debug`), the database, and how long to look for a
//! server before giving up.

use std::fmt;
use std::time::Duration;

/// How long server selection may take by default: long enough for a
/// replica-set election to finish, short enough that a wrong host fails
/// the command at once instead of hanging.
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the store uses multi-document transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transactions {
    /// Where the server supports them (a replica set or a sharded cluster).
    #[default]
    Auto,
    /// Never: the ordered fallback everywhere (for testing it on a replica
    /// set).
    Never,
}

/// How to reach the database.
#[derive(Clone)]
pub struct MongoOptions {
    /// `mongodb://[user:password@]host[:port][,host...]/[?options]`.
    pub uri: String,
    /// The database holding the collections (Synergy Flow's, to share its records).
    pub database: String,
    /// How long to wait for a server before giving up.
    pub server_selection_timeout: Duration,
    /// Whether `begin_run` uses transactions.
    pub transactions: Transactions,
}

impl MongoOptions {
    /// Options for `uri` and `database`, with the default timeout and transactions where the server has them.
    pub fn new(uri: impl Into<String>, database: impl Into<String>) -> Self {
        MongoOptions {
            uri: uri.into(),
            database: database.into(),
            server_selection_timeout: DEFAULT_SERVER_SELECTION_TIMEOUT,
            transactions: Transactions::Auto,
        }
    }
}

impl fmt::Debug for MongoOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoOptions")
            .field("uri", &redact_uri(&self.uri))
            .field("database", &self.database)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .field("transactions", &self.transactions)
            .finish()
    }
}

/// What is wrong with a URI or a database name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct InvalidSetting {
    /// `uri` or `database`.
    pub what: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The URI with its password replaced by `***`.
pub fn redact_uri(uri: &str) -> String {
    match split_uri(uri) {
        Some(parts) => match parts.userinfo {
            Some(userinfo) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***@{}", parts.scheme, parts.rest),
                None => format!("{}{userinfo}@{}", parts.scheme, parts.rest),
            },
            None => uri.to_string(),
        },
        None => "(an unreadable MongoDB URI)".to_string(),
    }
}

/// The password in the URI, if any, so errors can be scrubbed of it.
pub(crate) fn password(uri: &str) -> Option<String> {
    split_uri(uri)?
        .userinfo?
        .split_once(':')
        .map(|(_, p)| p.to_string())
        .filter(|p| !p.is_empty())
}

struct UriParts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    /// Hosts, path and options.
    rest: &'a str,
}

fn split_uri(uri: &str) -> Option<UriParts<'_>> {
    let scheme_end = uri.find("://")? + 3;
    let (scheme, after) = uri.split_at(scheme_end);
    let authority_end = after.find(['/', '?']).unwrap_or(after.len());
    match after[..authority_end].rfind('@') {
        Some(at) => Some(UriParts {
            scheme,
            userinfo: Some(&after[..at]),
            rest: &after[at + 1..],
        }),
        None => Some(UriParts {
            scheme,
            userinfo: None,
            rest: after,
        }),
    }
}

/// Checks a URI without connecting; returns its hosts (`host:port`) for
/// messages. Messages never contain the password.
pub fn validate_uri(uri: &str) -> Result<Vec<String>, InvalidSetting> {
    let bad = |message: String| InvalidSetting {
        what: "uri",
        message,
    };
    if uri.starts_with("mongodb+srv://") {
        return Err(bad(
            "mongodb+srv:// URIs need DNS SRV lookups, which this build does not do; list the hosts instead: mongodb://host1:27017,host2:27017/?replicaSet=NAME".into(),
        ));
    }
    if !uri.starts_with("mongodb://") {
        return Err(bad(format!(
            "'{}' does not start with mongodb://",
            redact_uri(uri)
        )));
    }
    let parts = split_uri(uri).ok_or_else(|| bad("not a MongoDB URI".into()))?;
    let hosts_end = parts.rest.find(['/', '?']).unwrap_or(parts.rest.len());
    let hosts: Vec<String> = parts.rest[..hosts_end]
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            if h.starts_with('[') || !h.contains(':') {
                if h.contains("]:") || (!h.starts_with('[') && h.contains(':')) {
                    h.to_string()
                } else {
                    format!("{h}:27017")
                }
            } else {
                h.to_string()
            }
        })
        .collect();
    if hosts.is_empty() {
        return Err(bad(format!("'{}' names no host", redact_uri(uri))));
    }
    for host in &hosts {
        let port = host.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad(format!(
                "'{}': host '{host}' has no valid port",
                redact_uri(uri)
            )));
        }
    }
    if let Some(userinfo) = parts.userinfo {
        if userinfo.is_empty() || userinfo.starts_with(':') {
            return Err(bad(format!(
                "'{}': empty user name before '@'",
                redact_uri(uri)
            )));
        }
    }
    Ok(hosts)
}

/// Checks a database name the way MongoDB does.
pub fn validate_database(name: &str) -> Result<(), InvalidSetting> {
    let bad = |message: String| InvalidSetting {
        what: "database",
        message,
    };
    if name.is_empty() {
        return Err(bad("must not be empty".into()));
    }
    if name.len() > 63 {
        return Err(bad(format!("'{name}' is longer than 63 bytes")));
    }
    if let Some(c) = name.chars().find(|c| {
        matches!(
            c,
            '/' | '\\' | '.' | ' ' | '"' | '$' | '*' | '<' | '>' | ':' | '|' | '?' | '\0'
        )
    }) {
        return Err(bad(format!(
            "'{name}' contains '{c}', which MongoDB does not allow in a database name"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let uri = "mongodb://flow:s3cr%40t@db1:27017,db2/flow?replicaSet=rs0";
        assert_eq!(
            redact_uri(uri),
            "mongodb://flow:***@db1:27017,db2/flow?replicaSet=rs0"
        );
        assert_eq!(password(uri).as_deref(), Some("s3cr%40t"));
        assert_eq!(redact_uri("mongodb://db1"), "mongodb://db1");
        assert_eq!(redact_uri("mongodb://user@db1"), "mongodb://user@db1");
        let options = MongoOptions::new(uri, "flow");
        assert!(!format!("{options:?}").contains("s3cr"), "{options:?}");
    }

    #[test]
    fn uris_are_checked_with_their_hosts() {
        assert_eq!(
            validate_uri("mongodb://flow:pw@db1:27018,db2/flow?w=majority").unwrap(),
            ["db1:27018", "db2:27017"]
        );
        assert_eq!(
            validate_uri("mongodb://127.0.0.1:4000").unwrap(),
            ["127.0.0.1:4000"]
        );
        assert_eq!(
            validate_uri("mongodb://[::1]:4000/").unwrap(),
            ["[::1]:4000"]
        );
        for (uri, needle) in [
            ("postgres://x", "does not start with mongodb://"),
            ("mongodb+srv://cluster0.example.net", "SRV"),
            ("mongodb:///flow", "names no host"),
            ("mongodb://db1:0", "no valid port"),
            ("mongodb://db1:http", "no valid port"),
            ("mongodb://:hunter2@db1", "empty user name"),
        ] {
            let e = validate_uri(uri).unwrap_err();
            assert!(e.to_string().contains(needle), "{uri}: {e}");
            assert!(e.to_string().starts_with("uri: "), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn database_names_are_checked() {
        validate_database("flow").unwrap();
        validate_database("synergy_flow-2").unwrap();
        for name in ["", "a.b", "a b", "a/b", "x$", &"d".repeat(64)] {
            assert!(validate_database(name).is_err(), "{name:?}");
        }
    }
}
