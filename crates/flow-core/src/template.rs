//! Argument templates with `{placeholder}` substitution.
//!
//! Templates are parsed when a flow is loaded, so an unknown placeholder is a
//! validation error long before anything runs. `{{` and `}}` stand for
//! literal braces.

use crate::context::ExecutionContext;
use std::fmt;

/// A placeholder that a template can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    FlowName,
    StepName,
    Timeperiod,
    StartTimeperiod,
    EndTimeperiod,
    Setting(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Value(Placeholder),
}

/// Why a template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder '{{{name}}}' in '{template}' (known: flow_name, step_name, timeperiod, start_timeperiod, end_timeperiod, settings.NAME)")]
    UnknownPlaceholder { template: String, name: String },
    #[error("unclosed '{{' in '{template}'")]
    Unclosed { template: String },
    #[error("stray '}}' in '{template}' (write '}}}}' for a literal brace)")]
    StrayBrace { template: String },
    #[error("setting '{name}' used in '{template}' is not defined")]
    MissingSetting { template: String, name: String },
    #[error("value of '{{{name}}}' ({value:?}) is not safe to put into a shell command; only letters, digits and . _ - / : = @ % + , are allowed")]
    UnsafeForShell { name: String, value: String },
}

/// A parsed argument template.
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

    /// Substitutes every placeholder.
    pub fn render(&self, cx: &ExecutionContext, step: &str) -> Result<String, TemplateError> {
        self.render_with(cx, step, |_, v| Ok(v.to_string()))
    }

    /// Substitutes every placeholder for a `sh -c` line: each substituted value
    /// must consist of characters that the shell treats literally.
    pub fn render_for_shell(
        &self,
        cx: &ExecutionContext,
        step: &str,
    ) -> Result<String, TemplateError> {
        self.render_with(cx, step, |name, value| {
            let safe = value.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '.' | '_' | '-' | '/' | ':' | '=' | '@' | '%' | '+' | ',')
            });
            if safe {
                Ok(value.to_string())
            } else {
                Err(TemplateError::UnsafeForShell {
                    name: name.to_string(),
                    value: cx.settings.redact(value),
                })
            }
        })
    }

    fn render_with(
        &self,
        cx: &ExecutionContext,
        step: &str,
        check: impl Fn(&str, &str) -> Result<String, TemplateError>,
    ) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.source.len() + 16);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Value(p) => {
                    let (name, value): (String, String) = match p {
                        Placeholder::FlowName => ("flow_name".into(), cx.flow_name.clone()),
                        Placeholder::StepName => ("step_name".into(), step.to_string()),
                        Placeholder::Timeperiod => ("timeperiod".into(), cx.timeperiod.to_string()),
                        Placeholder::StartTimeperiod => {
                            ("start_timeperiod".into(), cx.start_timeperiod.to_string())
                        }
                        Placeholder::EndTimeperiod => {
                            ("end_timeperiod".into(), cx.end_timeperiod.to_string())
                        }
                        Placeholder::Setting(setting) => {
                            let value = cx.settings.get(setting).ok_or_else(|| {
                                TemplateError::MissingSetting {
                                    template: self.source.clone(),
                                    name: setting.clone(),
                                }
                            })?;
                            (format!("settings.{setting}"), value.expose().to_string())
                        }
                    };
                    out.push_str(&check(&name, &value)?);
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
        let t = Template::parse("echo {settings.bucket} {timeperiod}").unwrap();
        assert_eq!(
            t.render_for_shell(&cx(), "s").unwrap(),
            "echo my-bucket 2026112800"
        );
        let t = Template::parse("echo {settings.missing}").unwrap();
        assert!(matches!(
            t.render(&cx(), "s"),
            Err(TemplateError::MissingSetting { .. })
        ));
    }
}
