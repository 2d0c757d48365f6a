//! Errors as people read them, written once for every cloud: the service's
//! own code and message on one line, or an error and its causes, never a
//! client library's `Debug` dump (the AWS SDK's `DisplayErrorContext`
//! appends one: raw headers, `SdkBody`, `Extensions { … }`, about a
//! kilobyte per error, stored as the step's error and logged on every
//! retry). The cloud crates add what they were doing ("AddJobFlowSteps on
//! EMR cluster j-…"); [`Transient::after_attempts`](crate::Transient::after_attempts)
//! adds how often it was tried.

use std::borrow::Cow;
use std::error::Error;

/// `CODE: message`, as a service said why it refused a call; `None` when
/// it said neither. The message is made [`one_line`].
pub fn service_error(code: Option<&str>, message: Option<&str>) -> Option<String> {
    let code = code.map(str::trim).filter(|c| !c.is_empty());
    let message = message.map(one_line).filter(|m| !m.is_empty());
    match (code, message) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (Some(code), None) => Some(code.to_string()),
        (None, Some(message)) => Some(message.into_owned()),
        (None, None) => None,
    }
}

/// Text a service wrote over several lines (Google's list of violations,
/// Dataproc's job details with their console link) on one line, so an error
/// reads as one sentence in a status table and a log line, where a newline
/// would otherwise show as a literal `\n`: lines trimmed, empty ones
/// dropped, joined by a space after a line that ends a sentence or a clause
/// (`.`, `:`, `;`, `,`), else by `"; "`.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.contains(['\n', '\r']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(['.', ':', ';', ',']) {
                " "
            } else {
                "; "
            });
        }
        out.push_str(line);
    }
    Cow::Owned(out)
}

/// An error followed by its causes, `outer: inner: cause`, on one line; a
/// cause whose text the line already holds is left out (many errors repeat
/// their source's message).
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut out = one_line(&e.to_string()).into_owned();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        let text = one_line(&text);
        if !text.is_empty() && !out.contains(text.as_ref()) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// `Ok(None)` when `result` failed with what `absent` calls "not there"
/// (a 404): a lookup of something that may not exist.
pub fn found<T, E>(result: Result<T, E>, absent: impl FnOnce(&E) -> bool) -> Result<Option<T>, E> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `message (after N attempts)`: what a call that was retried until its
/// retries were spent says.
pub fn after_attempts(message: &str, attempts: usize) -> String {
    match attempts {
        0 | 1 => message.to_string(),
        n => format!("{message} (after {n} attempts)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[test]
    fn a_service_error_is_its_code_and_message() {
        assert_eq!(
            service_error(Some("ThrottlingException"), Some("Rate exceeded")).as_deref(),
            Some("ThrottlingException: Rate exceeded")
        );
        assert_eq!(
            service_error(Some("NoSuchKey"), None).as_deref(),
            Some("NoSuchKey")
        );
        assert_eq!(service_error(None, Some("m")).as_deref(), Some("m"));
        assert_eq!(service_error(Some(" "), Some("")), None);
    }

    #[test]
    fn several_lines_become_one() {
        assert_eq!(one_line("plain"), "plain");
        assert_eq!(
            one_line(
                "Google Cloud Dataproc Agent reports job failure. If logs are available, they can be found at:\nhttps://console.cloud.google.com/dataproc/jobs/j\ngcloud dataproc jobs wait 'j'\n"
            ),
            "Google Cloud Dataproc Agent reports job failure. If logs are available, they can be found at: https://console.cloud.google.com/dataproc/jobs/j; gcloud dataproc jobs wait 'j'"
        );
        assert_eq!(
            one_line("Unknown name \"a\": Cannot find field.\r\n\r\n  Unknown name \"b\""),
            "Unknown name \"a\": Cannot find field. Unknown name \"b\""
        );
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn a_chain_names_each_cause_once_and_no_debug_text() {
        let e = Layer(
            "dispatch failure",
            Some(Box::new(Layer(
                "io error",
                Some(Box::new(Layer(
                    "tcp connect error: Connection refused",
                    Some(Box::new(Layer("Connection refused", None))),
                ))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "dispatch failure: io error: tcp connect error: Connection refused"
        );
    }

    #[test]
    fn attempts_are_counted_once_retried() {
        assert_eq!(after_attempts("x", 1), "x");
        assert_eq!(after_attempts("x", 6), "x (after 6 attempts)");
    }
}
