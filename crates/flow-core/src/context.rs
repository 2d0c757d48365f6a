//! The execution context: what one run of `[flow_name, timeperiod]` knows,
//! and the secrets it carries.
//!
//! Masking happens in one place: every [`Secret`] registers its value in a
//! process-wide list when it is made, and [`mask`] replaces each registered
//! value with `***`. The places where text leaves the process call it: the
//! engine's log lines (files and stderr), step records' error messages
//! before they are stored, and the CLI's own output. No call site has to
//! remember which settings are secret.
//!
//! A value is registered in every form our output can give it, not only as
//! written: `{:?}`/`escape_debug` escaped (errors quote keys that way),
//! JSON-escaped, and as a filesystem key resolves it (`a//b` is printed as
//! `a/b` once [`normalize_key`](crate::filesystem::normalize_key) has seen
//! it), so no call site has to remember how it formats a value either.

use crate::timeperiod::Timeperiod;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// The shortest secret the `flow` CLI accepts. Masking a shorter value (one
/// letter, a common word) would replace its every occurrence in ordinary
/// text and so tell a reader what it is.
pub const MIN_SECRET_LEN: usize = 8;

/// A credential. Its `Debug` and `Display` never show the value, and its
/// value is masked by [`mask`] from the moment it exists.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value` and registers it for [`mask`]. Library users should
    /// keep secrets at least [`MIN_SECRET_LEN`] long, as the CLI requires:
    /// a short one is still masked, but its masks reveal it.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Secret(value)
    }

    /// The secret value, for the one place that must hand it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Secret values to mask, longest first (so a secret that contains another
/// is masked whole).
static MASKED: RwLock<Vec<String>> = RwLock::new(Vec::new());
/// True once any secret exists: [`mask`] costs one atomic load until then.
static ANY_MASKED: AtomicBool = AtomicBool::new(false);

fn register(value: &str) {
    if value.is_empty() {
        return;
    }
    let mut masked = MASKED.write().unwrap_or_else(|p| p.into_inner());
    for form in forms(value) {
        if let Err(at) = masked
            .binary_search_by(|v| form.len().cmp(&v.len()).then(v.as_str().cmp(form.as_str())))
        {
            masked.insert(at, form);
        }
    }
    ANY_MASKED.store(true, Ordering::Release);
}

/// Every form `value` can take in our output: as written, resolved as a
/// filesystem key, and each of these `{:?}`-, `escape_debug`- and
/// JSON-escaped (and JSON of `{:?}`, for a JSON answer quoting an error),
/// and as the common quoting of other languages writes it inside a job's
/// output (Python `repr`, shell `printf %q` and single quotes).
/// Forms other than the value itself that are shorter than
/// [`MIN_SECRET_LEN`] are left out: masking them would replace ordinary
/// text (a key `a//b` resolves to `a/b`).
fn forms(value: &str) -> Vec<String> {
    let mut bases = vec![value.to_string()];
    let key = key_form(value);
    if key != value {
        bases.push(key);
    }
    let mut out = Vec::new();
    for base in bases {
        let debug = format!("{base:?}");
        let debug = debug[1..debug.len() - 1].to_string();
        let escaped = base.escape_debug().to_string();
        let json_debug = json_escaped(&debug);
        let json = json_escaped(&base);
        // Other languages' quoting: Python's `repr` (either quote), bash's
        // `printf %q` (backslashes, or `$'...'`), and shell single quotes
        // with an embedded `'` as `'\''` (`${VAR@Q}`) or `'"'"'`
        // (`shlex.quote`).
        let others = [
            python_repr(&base, Some('\'')),
            python_repr(&base, None),
            shell_backslashed(&base),
            ansi_c_quoted(&base),
            base.replace('\'', r"'\''"),
            base.replace('\'', r#"'"'"'"#),
        ];
        out.extend([base, debug, escaped, json, json_debug]);
        out.extend(others);
    }
    let first = out[0].clone();
    out.sort();
    out.dedup();
    out.retain(|f| *f == first || f.chars().count() >= MIN_SECRET_LEN);
    out
}

/// `text` as inside Python's `repr` of a string quoted with `quote`
/// (`'`, or `"` when the string holds a `'` and no `"`: then no quote in
/// it is escaped, `None`): backslashes doubled, `\n`, `\r`, `\t`, other
/// control characters as `\xNN`/`\uNNNN`.
fn python_repr(text: &str, quote: Option<char>) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if Some(c) == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() && u32::from(c) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// `text` as bash's `printf %q` writes a printable string: a backslash
/// before each character the shell would read specially. (A leading `#`
/// or `~` gets one too; the rest of the form still matches.)
fn shell_backslashed(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if " \t\n!\"$&'()*,;<>?[\\]^`{|}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` inside bash's `$'...'` quoting (what `printf %q` writes for a
/// string with control characters): `\\`, `\'`, `\n`-style escapes,
/// other control characters in octal.
fn ansi_c_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            '\u{7}' => out.push_str(r"\a"),
            '\u{8}' => out.push_str(r"\b"),
            '\u{b}' => out.push_str(r"\v"),
            '\u{c}' => out.push_str(r"\f"),
            '\u{1b}' => out.push_str(r"\E"),
            c if c.is_ascii_control() => out.push_str(&format!("\\{:03o}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// `value` as it survives inside a key resolved by
/// [`normalize_key`](crate::filesystem::normalize_key): empty and `.`
/// segments dropped, `..` taking the segment before it. A leading `..`
/// climbs into the text around the value, so it is dropped too.
fn key_form(value: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in value.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    segments.join("/")
}

/// `text` escaped as inside a JSON string (what `serde_json` writes).
fn json_escaped(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_string()
}

/// `text` with the value of every [`Secret`] of this process, in any of
/// its forms (as written, escaped, resolved as a key), replaced by `***`.
/// The one masking function: logs, stored error messages and the
/// CLI's output all go through it.
pub fn mask(text: &str) -> Cow<'_, str> {
    if !ANY_MASKED.load(Ordering::Acquire) {
        return Cow::Borrowed(text);
    }
    let masked = MASKED.read().unwrap_or_else(|p| p.into_inner());
    let mut out = Cow::Borrowed(text);
    for value in masked.iter() {
        if out.contains(value.as_str()) {
            out = Cow::Owned(out.replace(value.as_str(), "***"));
        }
    }
    out
}

/// The environment variable that carries secret `name` to a job:
/// `FLOW_SECRET_` and the name in upper case with `-` as `_`
/// (`api-token` → `FLOW_SECRET_API_TOKEN`).
pub fn secret_env_var(name: &str) -> String {
    let mut var = String::with_capacity(12 + name.len());
    var.push_str("FLOW_SECRET_");
    var.extend(name.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    var
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
    /// A value that may be shown and logged.
    Plain(String),
    /// A value that is masked wherever text leaves the process.
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
///
/// ```
/// use flow_core::{mask, Settings};
///
/// let settings = Settings::new()
///     .with_plain("bucket", "reports")
///     .with_secret("token", "s3cr3t-t0ken-value");
/// assert_eq!(settings.get("bucket").map(|v| v.expose()), Some("reports"));
/// assert!(settings.is_secret("token"));
/// // A secret never prints, and is masked in any text from then on.
/// assert!(!format!("{settings:?}").contains("s3cr3t"));
/// assert_eq!(mask("--token s3cr3t-t0ken-value"), "--token ***");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, SettingValue>,
}

impl Settings {
    /// No settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: SettingValue) {
        self.values.insert(name.into(), value);
    }

    /// With `name` set to a plain value.
    pub fn with_plain(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, SettingValue::Plain(value.into()));
        self
    }

    /// With `name` set to a secret (registered with [`mask`]).
    pub fn with_secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, SettingValue::Secret(Secret::new(value)));
        self
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&SettingValue> {
        self.values.get(name)
    }

    /// The names that are set.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Replaces every secret value found in `text` with `***`. The same as
    /// [`mask`] (which also knows these settings' secrets), kept for callers
    /// that hold settings.
    pub fn redact(&self, text: &str) -> String {
        mask(text).into_owned()
    }

    /// Is `name` a secret?
    pub fn is_secret(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(SettingValue::Secret(_)))
    }
}

/// Everything one run of `[flow_name, timeperiod]` knows about itself.
#[derive(Clone, Debug)]
pub struct ExecutionContext {
    /// The flow's name.
    pub flow_name: String,
    /// The timeperiod being processed (the run's identity with the flow name).
    pub timeperiod: Timeperiod,
    /// Inclusive start of the processing window.
    pub start_timeperiod: Timeperiod,
    /// Exclusive end of the processing window.
    pub end_timeperiod: Timeperiod,
    /// The values of `{settings.NAME}` and what actions read.
    pub settings: Arc<Settings>,
    /// How many clusters a full `run` spawns.
    pub number_of_clusters: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_replaces_every_secret_longest_first() {
        let _outer = Secret::new("mask-test-outer-value-mask-test-inner");
        let _inner = Secret::new("mask-test-inner");
        assert_eq!(
            mask("a mask-test-outer-value-mask-test-inner b mask-test-inner c"),
            "a *** b *** c"
        );
        assert!(matches!(mask("nothing here"), Cow::Borrowed(_)));
        assert_eq!(secret_env_var("api-token_2"), "FLOW_SECRET_API_TOKEN_2");
    }

    #[test]
    fn mask_knows_every_form_a_secret_takes_in_output() {
        let _quoted = Secret::new("forms-ab\"cd\\efgh12");
        let _slashes = Secret::new("/Forms-Abcd//Efgh1234/./");
        let _short = Secret::new("x//../yz/./");
        for text in [
            format!("{:?}", "/etc/forms-ab\"cd\\efgh12"),
            "/etc/forms-ab\\\"cd\\\\efgh12".to_string(),
            "forms-ab\"cd\\efgh12".escape_debug().to_string(),
            serde_json::to_string("at forms-ab\"cd\\efgh12").unwrap(),
            serde_json::to_string(&format!("{:?}", "forms-ab\"cd\\efgh12")).unwrap(),
            "rm bucket/Forms-Abcd/Efgh1234/x: not found".to_string(),
            format!("{:?}", "Forms-Abcd/Efgh1234"),
        ] {
            assert!(
                !mask(&text).contains("efgh") && !mask(&text).contains("Efgh"),
                "{text} -> {}",
                mask(&text)
            );
            assert!(mask(&text).contains("***"), "{text}");
        }
        // The short key form `yz` of the short secret is not masked: that
        // would replace ordinary text.
        assert_eq!(mask("lazy"), "lazy");
        assert_eq!(key_form("../a/./b//c/../d/"), "a/b/d");
    }

    /// What Python and bash print for three secrets (copied from
    /// `python3 -c 'print(repr(s))'`, `shlex.quote`, `printf %q` and
    /// `${S@Q}` of bash 5.2): every one is masked whole.
    #[test]
    fn mask_knows_how_python_and_the_shell_quote_a_secret() {
        let _double = Secret::new(r#"Py$ecret"q\z1"#);
        let _single = Secret::new(r"it's-Pr1vate\w");
        let _control = Secret::new("ctl\u{1b}s3cret\tx");
        for (printed, expected) in [
            (r#"'Py$ecret"q\\z1'"#, "'***'"),
            (r#"['Py$ecret"q\\z1', 2]"#, "['***', 2]"),
            (r#""it's-Pr1vate\\w""#, "\"***\""),
            (r#"'it'"'"'s-Pr1vate\w'"#, "'***'"),
            (r"'ctl\x1bs3cret\tx'", "'***'"),
            (r#"Py\$ecret\"q\\z1"#, "***"),
            (r"it\'s-Pr1vate\\w", "***"),
            (r"'it'\''s-Pr1vate\w'", "'***'"),
            (r"$'ctl\Es3cret\tx'", "$'***'"),
            (r#"$'line\nPy$ecret"q\\z1'"#, "$'line\\n***'"),
        ] {
            assert_eq!(mask(printed), expected, "{printed}");
        }
    }

    /// Forms only one quoting gives: Python's `repr` escaping its own
    /// quote next to a control character, bash's octal escape, and a
    /// `{:?}` of a longer text (its quotes far from the secret).
    #[test]
    fn mask_knows_the_forms_only_one_quoting_gives() {
        let _both = Secret::new("Py'th\"on\u{1b}s3cret");
        let _octal = Secret::new("ab\u{1}cd'ef-s3cret");
        // `{:?}` escapes `"` and the control character, not `'`: no other
        // form writes it so.
        let _debug = Secret::new("dbg-it's\"q\u{1b}s3cret");
        let debug = format!("{:?}", "/data/dbg-it's\"q\u{1b}s3cret/part-0");
        for (printed, expected) in [
            // python3 -c 'print(repr(s))'
            (r#"'Py\'th"on\x1bs3cret'"#, "'***'"),
            // bash: printf %q, ${s@Q}
            (r"$'ab\001cd\'ef-s3cret'", "$'***'"),
            (debug.as_str(), "\"/data/***/part-0\""),
        ] {
            assert_eq!(mask(printed), expected, "{printed}");
        }
    }

    #[test]
    fn settings_hold_plain_and_secret_values_by_name() {
        let mut s = Settings::new()
            .with_plain("bucket", "reports")
            .with_secret("api-token", "settings-s3cret-1");
        assert_eq!(s.names().collect::<Vec<_>>(), ["api-token", "bucket"]);
        assert_eq!(s.get("bucket").map(SettingValue::expose), Some("reports"));
        assert_eq!(
            s.get("api-token").map(SettingValue::expose),
            Some("settings-s3cret-1")
        );
        assert_eq!(s.get("missing"), None);
        assert!(s.is_secret("api-token") && !s.is_secret("bucket") && !s.is_secret("missing"));
        s.insert("bucket", SettingValue::Plain("archive".into()));
        assert_eq!(s.get("bucket").map(SettingValue::expose), Some("archive"));
        assert_eq!(s.names().count(), 2);
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::new()
            .with_secret("token", "hunter2")
            .with_plain("bucket", "b");
        assert!(!format!("{s:?}").contains("hunter2"));
        let secret = Secret::new("printed-s3cret");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "printed-s3cret");
        assert_eq!(
            s.redact("--token hunter2 --bucket b"),
            "--token *** --bucket b"
        );
    }
}
