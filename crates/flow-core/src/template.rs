//! Argument templates with `{placeholder}` substitution.
//!
//! Templates are parsed when a flow is loaded, so an unknown placeholder is a
//! validation error long before anything runs. `{{` and `}}` stand for
//! literal braces.

use crate::context::{secret_env_var, ExecutionContext, Secret, SettingValue, Settings};
use std::fmt;

/// A placeholder that a template can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `{flow_name}`
    FlowName,
    /// `{step_name}`
    StepName,
    /// `{timeperiod}`
    Timeperiod,
    /// `{start_timeperiod}`
    StartTimeperiod,
    /// `{end_timeperiod}`
    EndTimeperiod,
    /// `{settings.NAME}`, with the name.
    Setting(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Value(Placeholder),
}

/// Why a template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    #[error("unknown placeholder '{{{name}}}' in '{template}' (known: flow_name, step_name, timeperiod, start_timeperiod, end_timeperiod, settings.NAME)")]
    /// A `{name}` that is not a known placeholder.
    UnknownPlaceholder {
        /// The template as written.
        template: String,
        /// The placeholder's or setting's name.
        name: String,
    },
    #[error("'${{{name}}}' in '{template}' is read as the placeholder '{{{name}}}'; for the shell variable write ${name} or ${{{{{name}}}}} ('{{{{' and '}}}}' are literal braces)")]
    /// `${name}`: a shell variable written as a placeholder.
    ShellVariable {
        /// The template as written.
        template: String,
        /// The placeholder's or setting's name.
        name: String,
    },
    #[error("unclosed '{{' in '{template}'")]
    /// A `{` without its `}`.
    Unclosed {
        /// The template as written.
        template: String,
    },
    #[error("stray '}}' in '{template}' (write '}}}}' for a literal brace)")]
    /// A `}` without its `{`.
    StrayBrace {
        /// The template as written.
        template: String,
    },
    #[error("setting '{name}' used in '{template}' is not defined in [settings] or [secrets]")]
    /// A `{settings.NAME}` the settings do not define.
    MissingSetting {
        /// The template as written.
        template: String,
        /// The placeholder's or setting's name.
        name: String,
    },
    #[error("value of '{{{name}}}' ({value:?}) is not safe to put into a shell command; only letters, digits and . _ - / : = @ % + , are allowed (a value that needs more belongs in [secrets], which reach the command as an environment variable)")]
    /// A plain value that is not shell-safe, substituted into a shell line.
    UnsafeForShell {
        /// The placeholder's or setting's name.
        name: String,
        /// The value.
        value: String,
    },
    /// A filesystem key that leaves its root (or names it) once the settings are substituted.
    #[error("'{template}' gives the key {key:?} with these settings: {problem}")]
    UnsafeKey {
        /// The template as written.
        template: String,
        /// The key it renders to.
        key: String,
        /// Why the key is refused.
        problem: String,
    },
    /// A secret where a process's arguments would show it.
    #[error("'{{settings.{name}}}' is a secret and cannot be put into {place}: a process's arguments are visible to every user of the machine (ps); {hint}")]
    SecretInArgument {
        /// The secret setting's name.
        name: String,
        /// Where it was put, e.g. `spark args`.
        place: String,
        /// Where a secret can go instead.
        hint: String,
    },
}

/// How a job receives a rendered argument, which decides what may be
/// substituted into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage {
    /// Stays in this process or reaches the job by a private channel (a
    /// filesystem path, a message, Spark `conf`, Pig `params`): any value.
    Private,
    /// A `sh -c` line: plain values must be shell-safe; secrets become
    /// references to environment variables.
    Shell,
    /// A word of a job's argument vector, readable by anyone on the machine:
    /// no secrets. `hint` says where a secret can go instead.
    Argument {
        /// Where, for messages (e.g. `spark args`).
        place: String,
        /// Where a secret can go instead.
        hint: String,
    },
    /// A key of a cluster's storage for the filesystem operation `op`: with
    /// the settings substituted it must stay inside its root and not be the
    /// root itself ([`normalize_key`](crate::filesystem::normalize_key)),
    /// so an empty setting cannot turn `{settings.dir}/x/..` into a whole
    /// root. Otherwise like `Private`.
    Key {
        /// The filesystem operation, e.g. `rmdir`.
        op: &'static str,
    },
}

/// Any timeperiod: for rendering a key's shape at load time.
const SAMPLE_TIMEPERIOD: crate::timeperiod::Timeperiod = crate::timeperiod::Timeperiod::SAMPLE;

/// A rendered `sh -c` line and the secret values its references need in the
/// job's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommand {
    /// The line, with secrets as `"${FLOW_SECRET_NAME}"` references.
    pub command: String,
    /// `(VARIABLE, value)` for every secret the line refers to.
    pub env: Vec<(String, Secret)>,
}

/// Where the shell is inside a `sh -c` line, as far as quoting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    None,
    Single,
    Double,
}

impl Quoting {
    /// The quoting after `text`, starting from `self`.
    fn after(mut self, text: &str) -> Quoting {
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            self = match (self, c) {
                (Quoting::None, '\\') | (Quoting::Double, '\\') => {
                    chars.next();
                    self
                }
                (Quoting::None, '\'') => Quoting::Single,
                (Quoting::None, '"') => Quoting::Double,
                (Quoting::Single, '\'') | (Quoting::Double, '"') => Quoting::None,
                (q, _) => q,
            };
        }
        self
    }

    /// A reference to `variable` that expands to its value as it is, one
    /// word, never split or globbed, wherever it stands.
    fn reference(self, variable: &str) -> String {
        match self {
            Quoting::None => format!("\"${{{variable}}}\""),
            Quoting::Double => format!("${{{variable}}}"),
            // Close the single quotes, expand in double quotes, reopen.
            Quoting::Single => format!("'\"${{{variable}}}\"'"),
        }
    }
}

fn shell_safe(value: &str) -> bool {
    value.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(c, '.' | '_' | '-' | '/' | ':' | '=' | '@' | '%' | '+' | ',')
    })
}

/// A parsed argument template: text with `{placeholder}`s, checked when a
/// flow loads and rendered for each step.
///
/// ```
/// use flow_core::{ExecutionContext, Settings, Template, TimeQualifier, Timeperiod};
/// use std::sync::Arc;
///
/// let template = Template::parse("out/{settings.dir}/{step_name}/{timeperiod}")?;
/// let day: Timeperiod = "2026112800".parse()?;
/// let cx = ExecutionContext {
///     flow_name: "daily".into(),
///     timeperiod: day,
///     start_timeperiod: day,
///     end_timeperiod: day.next(TimeQualifier::Daily),
///     settings: Arc::new(Settings::new().with_plain("dir", "reports")),
///     number_of_clusters: 1,
/// };
/// assert_eq!(template.render(&cx, "load")?, "out/reports/load/2026112800");
/// // Unknown placeholders are refused when the template is parsed.
/// assert!(Template::parse("{tomorrow}").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

impl Template {
    /// Parses `source`, rejecting unknown placeholders.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(TemplateError::StrayBrace {
                        template: source.to_string(),
                    })
                }
                '{' => {
                    let rest = &source[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(TemplateError::Unclosed {
                            template: source.to_string(),
                        });
                    };
                    let name = &rest[..end];
                    let placeholder = match name {
                        "flow_name" => Placeholder::FlowName,
                        "step_name" => Placeholder::StepName,
                        "timeperiod" => Placeholder::Timeperiod,
                        "start_timeperiod" => Placeholder::StartTimeperiod,
                        "end_timeperiod" => Placeholder::EndTimeperiod,
                        _ => match name.strip_prefix("settings.") {
                            Some(setting)
                                if !setting.is_empty()
                                    && setting.chars().all(|c| {
                                        c.is_ascii_alphanumeric() || c == '_' || c == '-'
                                    }) =>
                            {
                                Placeholder::Setting(setting.to_string())
                            }
                            _ if source[..i].ends_with('$') => {
                                return Err(TemplateError::ShellVariable {
                                    template: source.to_string(),
                                    name: name.to_string(),
                                })
                            }
                            _ => {
                                return Err(TemplateError::UnknownPlaceholder {
                                    template: source.to_string(),
                                    name: name.to_string(),
                                })
                            }
                        },
                    };
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Value(placeholder));
                    // Skip the placeholder's characters and the closing brace.
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template {
            source: source.to_string(),
            segments,
        })
    }

    /// The text as written in the flow.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The settings this template reads.
    pub fn settings_used(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Value(Placeholder::Setting(name)) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Substitutes every placeholder, secrets included: for values that
    /// stay in this process or reach the job privately ([`Usage::Private`]).
    pub fn render(&self, cx: &ExecutionContext, step: &str) -> Result<String, TemplateError> {
        self.render_with(cx, step, |_, _, value| Ok(value.expose().to_string()))
    }

    /// Substitutes every placeholder for a word of a job's argument vector
    /// ([`Usage::Argument`]): a secret is refused, since every user of the
    /// machine can read the arguments of a process.
    pub fn render_argument(
        &self,
        cx: &ExecutionContext,
        step: &str,
        place: &str,
        hint: &str,
    ) -> Result<String, TemplateError> {
        self.render_with(cx, step, |name, _, value| match value {
            SettingValue::Secret(_) => Err(TemplateError::SecretInArgument {
                name: name.trim_start_matches("settings.").to_string(),
                place: place.to_string(),
                hint: hint.to_string(),
            }),
            plain => Ok(plain.expose().to_string()),
        })
    }

    /// True when rendering would substitute a secret.
    pub fn uses_secret(&self, settings: &Settings) -> bool {
        self.settings_used().any(|name| settings.is_secret(name))
    }

    /// Substitutes every placeholder for a `sh -c` line. Each plain value
    /// must consist of characters that the shell treats literally; each
    /// secret becomes a reference to the environment variable
    /// [`secret_env_var`]`(NAME)` (quoted so it expands to one word, inside
    /// or outside quotes), and the value goes into [`ShellCommand::env`], so
    /// it never appears in the command line.
    pub fn render_for_shell(
        &self,
        cx: &ExecutionContext,
        step: &str,
    ) -> Result<ShellCommand, TemplateError> {
        let mut env: Vec<(String, Secret)> = Vec::new();
        let mut quoting = Quoting::None;
        let mut command = String::with_capacity(self.source.len() + 16);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => {
                    quoting = quoting.after(text);
                    command.push_str(text);
                }
                Segment::Value(p) => {
                    let (name, value) = self.value(cx, step, p)?;
                    match (p, value) {
                        (Placeholder::Setting(setting), SettingValue::Secret(secret)) => {
                            let variable = secret_env_var(setting);
                            command.push_str(&quoting.reference(&variable));
                            if !env.iter().any(|(v, _)| *v == variable) {
                                env.push((variable, secret));
                            }
                        }
                        (_, value) if shell_safe(value.expose()) => {
                            command.push_str(value.expose())
                        }
                        (_, value) => {
                            return Err(TemplateError::UnsafeForShell {
                                name,
                                value: value.expose().to_string(),
                            })
                        }
                    }
                }
            }
        }
        Ok(ShellCommand { command, env })
    }

    /// Checks, before anything runs, that rendering with `settings` can
    /// succeed for `usage`: every setting is defined, plain values in a
    /// shell line are shell-safe, no secret lands in an argument, a
    /// filesystem key stays inside its root.
    pub fn check(&self, settings: &Settings, usage: &Usage) -> Result<(), TemplateError> {
        self.check_settings(settings, usage)?;
        if let Usage::Key { op } = usage {
            // The other placeholders are names (letters, digits, `_`, `-`)
            // and timeperiods (digits): they cannot add a `..` or empty a
            // key, so any values show the key's shape.
            let sample = ExecutionContext {
                flow_name: "flow".into(),
                timeperiod: SAMPLE_TIMEPERIOD,
                start_timeperiod: SAMPLE_TIMEPERIOD,
                end_timeperiod: SAMPLE_TIMEPERIOD,
                settings: std::sync::Arc::new(settings.clone()),
                number_of_clusters: 1,
            };
            let key = self.render(&sample, "step")?;
            if let Err(crate::filesystem::FsError::InvalidKey { problem, .. }) =
                crate::filesystem::normalize_key(op, &key)
            {
                return Err(TemplateError::UnsafeKey {
                    template: self.source.clone(),
                    key: crate::context::mask(&key).into_owned(),
                    problem: problem.to_string(),
                });
            }
        }
        Ok(())
    }

    fn check_settings(&self, settings: &Settings, usage: &Usage) -> Result<(), TemplateError> {
        for name in self.settings_used() {
            let value = settings
                .get(name)
                .ok_or_else(|| TemplateError::MissingSetting {
                    template: self.source.clone(),
                    name: name.to_string(),
                })?;
            match (usage, value) {
                (Usage::Shell, SettingValue::Plain(v)) if !shell_safe(v) => {
                    return Err(TemplateError::UnsafeForShell {
                        name: format!("settings.{name}"),
                        value: v.clone(),
                    })
                }
                (Usage::Argument { place, hint }, SettingValue::Secret(_)) => {
                    return Err(TemplateError::SecretInArgument {
                        name: name.to_string(),
                        place: place.clone(),
                        hint: hint.clone(),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The name (as messages write it) and value of one placeholder.
    fn value(
        &self,
        cx: &ExecutionContext,
        step: &str,
        p: &Placeholder,
    ) -> Result<(String, SettingValue), TemplateError> {
        let plain = |name: &str, v: String| Ok((name.to_string(), SettingValue::Plain(v)));
        match p {
            Placeholder::FlowName => plain("flow_name", cx.flow_name.clone()),
            Placeholder::StepName => plain("step_name", step.to_string()),
            Placeholder::Timeperiod => plain("timeperiod", cx.timeperiod.to_string()),
            Placeholder::StartTimeperiod => {
                plain("start_timeperiod", cx.start_timeperiod.to_string())
            }
            Placeholder::EndTimeperiod => plain("end_timeperiod", cx.end_timeperiod.to_string()),
            Placeholder::Setting(setting) => {
                let value =
                    cx.settings
                        .get(setting)
                        .ok_or_else(|| TemplateError::MissingSetting {
                            template: self.source.clone(),
                            name: setting.clone(),
                        })?;
                Ok((format!("settings.{setting}"), value.clone()))
            }
        }
    }

    fn render_with(
        &self,
        cx: &ExecutionContext,
        step: &str,
        check: impl Fn(&str, &Placeholder, &SettingValue) -> Result<String, TemplateError>,
    ) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.source.len() + 16);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Value(p) => {
                    let (name, value) = self.value(cx, step, p)?;
                    out.push_str(&check(&name, p, &value)?);
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Settings;
    use std::sync::Arc;

    fn cx() -> ExecutionContext {
        ExecutionContext {
            flow_name: "daily".into(),
            timeperiod: "2026112800".parse().unwrap(),
            start_timeperiod: "2026112800".parse().unwrap(),
            end_timeperiod: "2026112900".parse().unwrap(),
            settings: Arc::new(
                Settings::new()
                    .with_plain("bucket", "my-bucket")
                    .with_plain("evil", "x; rm -rf /"),
            ),
            number_of_clusters: 1,
        }
    }

    #[test]
    fn renders_placeholders() {
        let t = Template::parse(
            "s3://{settings.bucket}/{flow_name}/{step_name}/{timeperiod}-{end_timeperiod} {{x}}",
        )
        .unwrap();
        assert_eq!(
            t.render(&cx(), "extract").unwrap(),
            "s3://my-bucket/daily/extract/2026112800-2026112900 {x}"
        );
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        assert!(matches!(
            Template::parse("{nope}"),
            Err(TemplateError::UnknownPlaceholder { name, .. }) if name == "nope"
        ));
        assert!(Template::parse("{timeperiod").is_err());
        assert!(Template::parse("a}b").is_err());
        assert!(Template::parse("{settings.}").is_err());
    }

    #[test]
    fn shell_rendering_refuses_unsafe_values() {
        let t = Template::parse("echo {settings.evil}").unwrap();
        assert!(matches!(
            t.render_for_shell(&cx(), "s"),
            Err(TemplateError::UnsafeForShell { .. })
        ));
        assert!(matches!(
            t.check(&cx().settings, &Usage::Shell),
            Err(TemplateError::UnsafeForShell { .. })
        ));
        assert_eq!(t.check(&cx().settings, &Usage::Private), Ok(()));
        let t = Template::parse("echo {settings.bucket} {timeperiod}").unwrap();
        assert_eq!(
            t.render_for_shell(&cx(), "s").unwrap().command,
            "echo my-bucket 2026112800"
        );
        let t = Template::parse("echo {settings.missing}").unwrap();
        assert!(matches!(
            t.render(&cx(), "s"),
            Err(TemplateError::MissingSetting { .. })
        ));
        assert!(matches!(
            t.check(&cx().settings, &Usage::Private),
            Err(TemplateError::MissingSetting { .. })
        ));
    }

    fn with_secret() -> ExecutionContext {
        let mut cx = cx();
        cx.settings = Arc::new(
            Settings::new()
                .with_plain("bucket", "my-bucket")
                .with_secret("api-token", "it's \"$(secret)\" value"),
        );
        cx
    }

    #[test]
    fn secrets_reach_shell_lines_as_quoted_environment_references() {
        let t = Template::parse(
            "curl -H x-{settings.api-token}-y \"in {settings.api-token} dq\" 'in {settings.api-token} sq' \\'{settings.api-token}",
        )
        .unwrap();
        let rendered = t.render_for_shell(&with_secret(), "s").unwrap();
        assert_eq!(
            rendered.command,
            "curl -H x-\"${FLOW_SECRET_API_TOKEN}\"-y \"in ${FLOW_SECRET_API_TOKEN} dq\" 'in '\"${FLOW_SECRET_API_TOKEN}\"' sq' \\'\"${FLOW_SECRET_API_TOKEN}\""
        );
        assert_eq!(rendered.env.len(), 1);
        assert_eq!(rendered.env[0].0, "FLOW_SECRET_API_TOKEN");
        assert_eq!(rendered.env[0].1.expose(), "it's \"$(secret)\" value");
        // Any secret value is fine in a shell line: it is never parsed.
        assert_eq!(t.check(&with_secret().settings, &Usage::Shell), Ok(()));
    }

    #[test]
    fn secrets_are_refused_in_arguments() {
        let t = Template::parse("--token={settings.api-token}").unwrap();
        let usage = Usage::Argument {
            place: "spark `args`".into(),
            hint: "use conf".into(),
        };
        let e = t.check(&with_secret().settings, &usage).unwrap_err();
        assert!(
            e.to_string()
                .contains("'{settings.api-token}' is a secret and cannot be put into spark `args`"),
            "{e}"
        );
        assert!(matches!(
            t.render_argument(&with_secret(), "s", "spark `args`", "use conf"),
            Err(TemplateError::SecretInArgument { .. })
        ));
        assert!(t.uses_secret(&with_secret().settings));
        assert!(!t.uses_secret(&cx().settings));
    }

    #[test]
    fn keys_that_leave_their_root_with_the_settings_are_refused() {
        let settings = Settings::new()
            .with_plain("empty", "")
            .with_plain("sub", "data");
        let key = Usage::Key { op: "rmdir" };
        for bad in [
            "{settings.empty}x/..",
            "{settings.empty}/..",
            "{settings.empty}",
            "{settings.sub}/../..",
        ] {
            let e = Template::parse(bad)
                .unwrap()
                .check(&settings, &key)
                .unwrap_err();
            assert!(matches!(e, TemplateError::UnsafeKey { .. }), "{bad}: {e}");
        }
        for good in [
            "{settings.sub}/x/..",
            "out/{flow_name}/{timeperiod}",
            "/abs/{settings.sub}",
        ] {
            Template::parse(good)
                .unwrap()
                .check(&settings, &key)
                .unwrap();
        }
        let e = Template::parse("{settings.empty}/..")
            .unwrap()
            .check(&settings, &key)
            .unwrap_err();
        assert!(e.to_string().contains("gives the key \"/..\""), "{e}");
        assert!(e.to_string().contains("leaves its root"), "{e}");
    }

    #[test]
    fn a_shell_variable_gets_a_hint() {
        let e = Template::parse("echo ${HOME}").unwrap_err();
        assert!(matches!(e, TemplateError::ShellVariable { .. }));
        assert!(e.to_string().contains("write $HOME or ${{HOME}}"), "{e}");
        assert_eq!(
            Template::parse("echo ${{HOME}} $HOME").unwrap().source(),
            "echo ${{HOME}} $HOME"
        );
    }
}
