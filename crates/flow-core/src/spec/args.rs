//! [`ActionArgs`]: one action's arguments from a flow file, with typed
//! getters that report unknown keys ([`ArgError`]).

use crate::template::{Template, TemplateError};
use std::collections::BTreeSet;
use std::time::Duration;
use toml::{Table, Value};

/// A problem with one action's arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    #[error("missing required argument '{arg}'")]
    /// A required argument is absent.
    Missing {
        /// The argument's name.
        arg: String,
    },
    #[error("argument '{arg}' must be {expected}")]
    /// An argument has the wrong type.
    WrongType {
        /// The argument's name.
        arg: String,
        /// What it should be, e.g. `a string`.
        expected: &'static str,
    },
    #[error("unknown argument '{arg}' (this action takes: {known})")]
    /// An argument the action does not take (often a typo).
    Unknown {
        /// The argument's name.
        arg: String,
        /// The arguments it takes.
        known: String,
    },
    /// An argument's template does not parse.
    #[error("argument '{arg}': {source}")]
    Template {
        /// The argument's name.
        arg: String,
        /// Why.
        #[source]
        source: TemplateError,
    },
    #[error("argument '{arg}': {message}")]
    /// An argument's value is not acceptable.
    Invalid {
        /// The argument's name.
        arg: String,
        /// Why.
        message: String,
    },
}

/// The arguments of one action in a flow file, with typed getters that
/// remember which keys were read so unknown ones can be reported.
#[derive(Debug)]
pub struct ActionArgs {
    pub(super) table: Table,
    read: BTreeSet<String>,
}

impl ActionArgs {
    /// The arguments in `table`, none read yet.
    pub fn new(table: Table) -> Self {
        ActionArgs {
            table,
            read: BTreeSet::new(),
        }
    }

    fn get(&mut self, arg: &str) -> Option<&Value> {
        self.read.insert(arg.to_string());
        self.table.get(arg)
    }

    /// A required string argument parsed as a template.
    pub fn template(&mut self, arg: &str) -> Result<Template, ArgError> {
        self.opt_template(arg)?
            .ok_or_else(|| ArgError::Missing { arg: arg.into() })
    }

    /// An optional string argument parsed as a template.
    pub fn opt_template(&mut self, arg: &str) -> Result<Option<Template>, ArgError> {
        match self.opt_string(arg)? {
            None => Ok(None),
            Some(text) => Template::parse(&text)
                .map(Some)
                .map_err(|source| ArgError::Template {
                    arg: arg.into(),
                    source,
                }),
        }
    }

    /// An optional plain string.
    pub fn opt_string(&mut self, arg: &str) -> Result<Option<String>, ArgError> {
        match self.get(arg) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ArgError::WrongType {
                arg: arg.into(),
                expected: "a string",
            }),
        }
    }

    /// An optional list of string templates (empty when absent).
    pub fn template_list(&mut self, arg: &str) -> Result<Vec<Template>, ArgError> {
        let wrong = || ArgError::WrongType {
            arg: arg.into(),
            expected: "a list of strings",
        };
        match self.get(arg) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Template::parse(s).map_err(|source| ArgError::Template {
                        arg: arg.into(),
                        source,
                    }),
                    _ => Err(wrong()),
                })
                .collect(),
            Some(_) => Err(wrong()),
        }
    }

    /// An optional table of string templates, e.g. Spark `conf` (empty when
    /// absent), in key order.
    pub fn template_map(&mut self, arg: &str) -> Result<Vec<(String, Template)>, ArgError> {
        let wrong = || ArgError::WrongType {
            arg: arg.into(),
            expected: "a table of strings",
        };
        match self.get(arg) {
            None => Ok(Vec::new()),
            Some(Value::Table(t)) => {
                let mut out = Vec::with_capacity(t.len());
                for (k, v) in t {
                    let Value::String(s) = v else {
                        return Err(wrong());
                    };
                    let t = Template::parse(s).map_err(|source| ArgError::Template {
                        arg: format!("{arg}.{k}"),
                        source,
                    })?;
                    out.push((k.clone(), t));
                }
                Ok(out)
            }
            Some(_) => Err(wrong()),
        }
    }

    /// An optional duration written like `"90s"` or `"5m"`.
    pub fn opt_duration(&mut self, arg: &str) -> Result<Option<Duration>, ArgError> {
        match self.opt_string(arg)? {
            None => Ok(None),
            Some(text) => humantime_serde::re::humantime::parse_duration(&text)
                .map(Some)
                .map_err(|e| ArgError::Invalid {
                    arg: arg.into(),
                    message: format!(
                        "'{text}' is not a duration ({e}); write e.g. \"90s\" or \"5m\""
                    ),
                }),
        }
    }

    /// Fails on any argument no getter asked for.
    pub fn finish(self) -> Result<(), ArgError> {
        if let Some(unknown) = self.table.keys().find(|k| !self.read.contains(*k)) {
            return Err(ArgError::Unknown {
                arg: unknown.clone(),
                known: if self.read.is_empty() {
                    "no arguments".into()
                } else {
                    self.read.iter().cloned().collect::<Vec<_>>().join(", ")
                },
            });
        }
        Ok(())
    }
}
