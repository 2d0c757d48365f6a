//! The execution context: what one run of `[flow_name, timeperiod]` knows.

use crate::timeperiod::Timeperiod;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A credential. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the one place that must hand it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One user setting: a plain value or a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingValue {
    Plain(String),
    Secret(Secret),
}

impl SettingValue {
    /// The value to substitute into an argument.
    pub fn expose(&self) -> &str {
        match self {
            SettingValue::Plain(v) => v,
            SettingValue::Secret(s) => s.expose(),
        }
    }
}

/// Names, credentials and environment values for a run, as `{settings.NAME}`
/// placeholders see them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, SettingValue>,
}

impl Settings {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, value: SettingValue) {
        self.values.insert(name.into(), value);
    }

    pub fn with_plain(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, SettingValue::Plain(value.into()));
        self
    }

    pub fn with_secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, SettingValue::Secret(Secret::new(value)));
        self
    }

    pub fn get(&self, name: &str) -> Option<&SettingValue> {
        self.values.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Replaces every secret value found in `text` with `***`, so a command
    /// line can be logged.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in self.values.values() {
            if let SettingValue::Secret(secret) = value {
                if !secret.expose().is_empty() {
                    out = out.replace(secret.expose(), "***");
                }
            }
        }
        out
    }
}

/// Everything one run of `[flow_name, timeperiod]` knows about itself.
#[derive(Clone, Debug)]
pub struct ExecutionContext {
    pub flow_name: String,
    pub timeperiod: Timeperiod,
    /// Inclusive start of the processing window.
    pub start_timeperiod: Timeperiod,
    /// Exclusive end of the processing window.
    pub end_timeperiod: Timeperiod,
    pub settings: Arc<Settings>,
    /// How many clusters a full `run` spawns.
    pub number_of_clusters: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Settings::new()
            .with_secret("token", "hunter2")
            .with_plain("bucket", "b");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(
            s.redact("--token hunter2 --bucket b"),
            "--token *** --bucket b"
        );
    }
}
