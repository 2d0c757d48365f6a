//! The settings file, `flow.toml`: where logs and state go, which store and
//! cluster kind to use, lease and cancellation timings, and the values of
//! `{settings.NAME}` placeholders.
//!
//! Found by `--settings FILE` / `FLOW_SETTINGS`, else `./flow.toml` if it
//! exists, else built-in defaults. Unknown keys and wrong types are errors
//! with `file:line:column`; relative paths resolve against the file's
//! directory. Defaults are per user (XDG data and state directories), never a
//! shared system path. The full reference is `docs/src/reference/settings.md`.
//!
//! This module only reads and checks; it opens nothing. Turning the store and
//! cluster sections into backends is `backends.rs`'s job.

use crate::exit::{line_col, CliError};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file name looked for in the current directory.
pub const DEFAULT_FILE: &str = "flow.toml";

/// Where the settings came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Defaults,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Defaults => f.write_str("the built-in settings"),
        }
    }
}

/// The store backends a settings file may name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Sqlite,
    Mongo,
}

/// The cluster backends a settings file may name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterKind {
    #[default]
    Local,
    Emr,
    Dataproc,
    Qubole,
    Azure,
}

/// SQLite durability; see `flow_store_sqlite::Synchronous`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynchronousSetting {
    #[default]
    Normal,
    Full,
}

/// A `[settings]` value: strings, and numbers and booleans written as
/// TOML literals (kept as their text), since placeholders substitute text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    log_directory: Option<PathBuf>,
    data_directory: Option<PathBuf>,
    flows_directory: Option<PathBuf>,
    number_of_clusters: Option<NonZeroUsize>,
    #[serde(default)]
    store: StoreSpec,
    #[serde(default)]
    cluster: ClusterSpec,
    #[serde(default)]
    lease: LeaseSpec,
    #[serde(default)]
    engine: EngineSpec,
    #[serde(default)]
    serve: ServeSpec,
    #[serde(default)]
    schedule: ScheduleSpec,
    #[serde(default)]
    settings: BTreeMap<String, Scalar>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    /// Who is told what about every flow's runs (guide/signals.md).
    #[serde(default)]
    notify: Vec<toml::Spanned<flow_core::notify::NotifySpec>>,
    /// Where the viewer is reached, for links in notifications.
    viewer_url: Option<String>,
    /// Where OpenLineage run events go (guide/signals.md).
    lineage: Option<toml::Spanned<flow_core::lineage::LineageSpec>>,
    /// Traces over OTLP/HTTP (the `otel` feature).
    telemetry: Option<TelemetrySpec>,
    /// Prices per instance-hour, for the cost of runs (guide/cost.md).
    cost: Option<flow_core::PriceTable>,
}

/// `[telemetry]`: each run as a trace, exported over OTLP/HTTP
/// (reference/settings.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
struct TelemetrySpec {
    /// The collector's OTLP/HTTP base URL; unset, nothing is exported.
    otlp_endpoint: Option<flow_core::notify::HttpUrl>,
    /// Request headers; values are secrets (`"env:VAR"`).
    #[serde(default)]
    headers: BTreeMap<String, flow_core::notify::NotifySecret>,
    /// The traces' `service.name` (default `flow`).
    service_name: Option<String>,
    /// How long an export, and the flush at exit, may take (default 5s).
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSpec {
    #[serde(default)]
    kind: StoreKind,
    path: Option<PathBuf>,
    #[serde(default)]
    synchronous: SynchronousSetting,
    #[serde(default, with = "humantime_serde")]
    busy_timeout: Option<Duration>,
    /// MongoDB: `mongodb://...` or `env:VAR`.
    uri: Option<toml::Spanned<String>>,
    database: Option<toml::Spanned<String>>,
    #[serde(default, with = "humantime_serde")]
    server_selection_timeout: Option<Duration>,
    /// Recorded log lines older than this are deleted when a run starts.
    #[serde(default, with = "humantime_serde")]
    log_retention: Option<Duration>,
    /// Record every log-file line in the store too (default true).
    record_logs: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSpec {
    #[serde(default)]
    kind: ClusterKind,
    root: Option<PathBuf>,
    work_dir: Option<PathBuf>,
    spark_submit: Option<PathBuf>,
    pig: Option<PathBuf>,
    hadoop: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default, with = "humantime_serde")]
    kill_grace: Option<Duration>,
    /// Jobs a local cluster runs at once (1 unless set).
    jobs_per_cluster: Option<std::num::NonZeroUsize>,
    /// `[cluster.emr]`, read (and checked, with line:col) by the EMR
    /// crate's own serde type.
    #[cfg(feature = "emr")]
    emr: Option<flow_cluster_emr::ValidatedEmrConfig>,
    /// Without the feature the table is kept unread, so the error is the
    /// one about rebuilding, not an unknown key.
    #[cfg(not(feature = "emr"))]
    #[allow(dead_code)]
    emr: Option<toml::Table>,
    /// `[cluster.dataproc]`, checked by the Dataproc crate's own serde type.
    #[cfg(feature = "dataproc")]
    #[serde(
        default,
        deserialize_with = "flow_cluster_dataproc::deserialize_validated"
    )]
    dataproc: Option<flow_cluster_dataproc::DataprocConfig>,
    /// Kept (unread) so one settings file serves builds with and without it.
    #[cfg(not(feature = "dataproc"))]
    #[serde(default, rename = "dataproc")]
    _dataproc: Option<toml::Table>,
    /// `[cluster.qubole]`, checked by the Qubole crate's own serde type.
    #[cfg(feature = "qubole")]
    #[serde(
        default,
        deserialize_with = "flow_cluster_qubole::deserialize_validated"
    )]
    qubole: Option<flow_cluster_qubole::QuboleConfig>,
    /// Kept (unread) so one settings file serves builds with and without it.
    #[cfg(not(feature = "qubole"))]
    #[serde(default, rename = "qubole")]
    _qubole: Option<toml::Table>,
    /// `[cluster.azure]`, checked by the HDInsight crate's own serde type
    /// (a secret in plain text refused naming its key, never its value).
    #[cfg(feature = "azure")]
    #[serde(
        default,
        deserialize_with = "flow_cluster_azure::deserialize_validated"
    )]
    azure: Option<flow_cluster_azure::AzureConfig>,
    /// Kept (unread) so one settings file serves builds with and without it.
    #[cfg(not(feature = "azure"))]
    #[serde(default, rename = "azure")]
    _azure: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseSpec {
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    heartbeat: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineSpec {
    #[serde(default, with = "humantime_serde")]
    cancel_grace: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeSpec {
    bind: Option<std::net::SocketAddr>,
    token: Option<TokenText>,
    metrics: Option<bool>,
}

/// `[schedule]`: the `flow schedule` process (a flow file's own
/// `[schedule]` says when that flow runs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSpec {
    concurrency: Option<NonZeroUsize>,
}

/// The `[serve] token` as written: `"env:VAR"` or the token itself, which
/// `Debug` must not show.
#[derive(Deserialize)]
#[serde(transparent)]
struct TokenText(String);

impl fmt::Debug for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.strip_prefix("env:") {
            Some(var) => write!(f, "env:{var}"),
            None => f.write_str("***"),
        }
    }
}

/// The `[store]` section with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub kind: StoreKind,
    /// `None`: `DATA_DIR/flow.db`.
    pub path: Option<PathBuf>,
    pub synchronous: SynchronousSetting,
    pub busy_timeout: Duration,
    /// The MongoDB URI as written (`env:VAR` not yet read); a secret.
    pub uri: Option<String>,
    pub database: String,
    pub server_selection_timeout: Duration,
    /// Recorded log lines are kept this long.
    pub log_retention: Duration,
    pub record_logs: bool,
}

/// The `[cluster]` section with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub kind: ClusterKind,
    /// `None`: the current directory.
    pub root: Option<PathBuf>,
    /// `None`: the current directory.
    pub work_dir: Option<PathBuf>,
    pub spark_submit: Option<PathBuf>,
    pub pig: Option<PathBuf>,
    pub hadoop: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub kill_grace: Option<Duration>,
    pub jobs_per_cluster: Option<std::num::NonZeroUsize>,
}

/// Loaded, checked settings.
#[derive(Debug)]
pub struct SettingsFile {
    pub source: Source,
    /// Where relative paths resolve: the file's directory.
    base: PathBuf,
    spec: FileSpec,
}

const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DATABASE: &str = "flow";
const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_SCHEDULE_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(4).unwrap();
const DEFAULT_LOG_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

impl SettingsFile {
    /// Finds and loads the settings: `explicit` (the flag or
    /// `FLOW_SETTINGS`), else `./flow.toml` if it exists, else defaults.
    pub fn load(explicit: Option<&Path>) -> Result<SettingsFile, CliError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_FILE).is_file() => PathBuf::from(DEFAULT_FILE),
            None => return Ok(SettingsFile::defaults()),
        };
        let text = flow_core::spec::read_capped(&path, MAX_SETTINGS_FILE).map_err(|e| {
            let (position, problem) = *e;
            let place = match position {
                Some((line, column)) => format!("{}:{line}:{column}", path.display()),
                None => path.display().to_string(),
            };
            let problem = match problem {
                flow_core::spec::SpecProblem::Read(e) => {
                    return CliError::bad_input(format!("cannot read settings file {place}: {e}"))
                }
                flow_core::spec::SpecProblem::TooLarge { .. } => format!(
                    "the file is larger than {} KiB; a settings file is text of at most that size",
                    MAX_SETTINGS_FILE / 1024
                ),
                other => other.to_string(),
            };
            CliError::bad_input(format!("settings file {place}: {problem}"))
        })?;
        SettingsFile::parse(&text, &path)
    }

    /// The built-in settings, as if an empty file were in the current
    /// directory.
    pub fn defaults() -> SettingsFile {
        SettingsFile {
            source: Source::Defaults,
            base: current_dir(),
            spec: FileSpec::default(),
        }
    }

    /// Parses and checks settings text; `path` is used in messages and to
    /// resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<SettingsFile, CliError> {
        if let Some((offset, message)) = crate::renamed_keys::first_renamed(text) {
            let (line, column) = line_col(text, offset);
            return Err(CliError::bad_input(format!(
                "{}:{line}:{column}: {message}",
                path.display()
            )));
        }
        let spec: FileSpec = toml::from_str(text).map_err(|e| {
            let message = flow_core::spec::toml_message(text, &e);
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            CliError::bad_input(format!("{}:{line}:{column}: {message}", path.display()))
        })?;
        let base = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) if dir.is_absolute() => dir.to_path_buf(),
            Some(dir) => current_dir().join(dir),
            None => current_dir(),
        };
        let settings = SettingsFile {
            source: Source::File(path.to_path_buf()),
            base,
            spec,
        };
        settings.check(text)?;
        settings.check_store(text)?;
        settings.check_signals(text)?;
        settings.check_telemetry(text)?;
        settings.check_cost(text)?;
        Ok(settings)
    }

    fn error(&self, message: impl fmt::Display) -> CliError {
        CliError::bad_input(format!("{}: {message}", self.source))
    }

    /// Checks the `[store]` section: the MongoDB keys only with `kind =
    /// "mongo"`, a URI that parses (unless it is read from the environment
    /// at run time), a valid database name. Errors carry `file:line:col`
    /// and never the URI's password.
    fn check_store(&self, text: &str) -> Result<(), CliError> {
        let store = &self.spec.store;
        let at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_col(text, span.start);
            CliError::bad_input(format!("{}:{line}:{column}: {message}", self.source))
        };
        if store.kind != StoreKind::Mongo {
            for (key, spanned) in [("uri", &store.uri), ("database", &store.database)] {
                if let Some(value) = spanned {
                    return Err(at(
                        value.span(),
                        format!("[store] {key} is a setting of kind = \"mongo\", not of kind = \"sqlite\""),
                    ));
                }
            }
            return Ok(());
        }
        if !cfg!(feature = "mongo") {
            // backends.rs says how to rebuild.
            return Ok(());
        }
        let Some(uri) = &store.uri else {
            return Err(self.error(
                "[store] kind = \"mongo\" needs uri = \"mongodb://HOST:PORT\" (or \"env:VARIABLE\")",
            ));
        };
        if !uri.get_ref().starts_with("env:") {
            if let Err(e) = crate::store_uri::check(uri.get_ref()) {
                return Err(at(uri.span(), format!("[store] {e}")));
            }
        }
        if let Some(database) = &store.database {
            if let Err(e) = crate::store_uri::check_database(database.get_ref()) {
                return Err(at(database.span(), format!("[store] {e}")));
            }
        }
        if store.server_selection_timeout.is_some_and(|t| t.is_zero()) {
            return Err(self.error("[store] server_selection_timeout must not be zero"));
        }
        Ok(())
    }

    /// An error at `keys` (a path of tables and a key, e.g. `["lease",
    /// "ttl"]`; an index after an array's key, `["notify", "0", "to"]`)
    /// in `text`: `FILE:LINE:COL: message`. Points at the key
    /// itself when `at_key`, else at its value.
    fn error_at(
        &self,
        text: &str,
        keys: &[&str],
        at_key: bool,
        message: impl fmt::Display,
    ) -> CliError {
        match locate(text, keys, at_key) {
            Some(offset) => {
                let (line, column) = line_col(text, offset);
                CliError::bad_input(format!("{}:{line}:{column}: {message}", self.source))
            }
            None => self.error(message),
        }
    }

    /// Checks each `[[notify]]` entry and `[lineage]` (what types alone
    /// cannot), at its place.
    fn check_signals(&self, text: &str) -> Result<(), CliError> {
        for (number, entry) in self.spec.notify.iter().enumerate() {
            if let Some(problem) = entry.get_ref().problem() {
                let (line, column) = line_col(text, entry.span().start);
                return Err(CliError::bad_input(format!(
                    "{}:{line}:{column}: {problem}",
                    self.source
                )));
            }
            if let flow_core::notify::NotifySpec::Email {
                ca_file: Some(ca_file),
                ..
            } = entry.get_ref()
            {
                if let Err(why) = flow_signals::trusted_roots(&self.resolve(ca_file)) {
                    return Err(self.error_at(
                        text,
                        &["notify", &number.to_string(), "ca_file"],
                        false,
                        format!("[[notify]] ca_file: {why}"),
                    ));
                }
            }
        }
        if let Some(lineage) = &self.spec.lineage {
            if let Some(problem) = lineage.get_ref().problem() {
                let (line, column) = line_col(text, lineage.span().start);
                return Err(CliError::bad_input(format!(
                    "{}:{line}:{column}: {problem}",
                    self.source
                )));
            }
        }
        Ok(())
    }

    /// `[lineage]`, when set.
    pub fn lineage(&self) -> Option<&flow_core::lineage::LineageSpec> {
        self.spec.lineage.as_ref().map(toml::Spanned::get_ref)
    }

    /// Checks `[telemetry]`: only in a build with the `otel` feature,
    /// header names HTTP accepts, a timeout above zero.
    fn check_telemetry(&self, text: &str) -> Result<(), CliError> {
        let Some(telemetry) = &self.spec.telemetry else {
            return Ok(());
        };
        if !cfg!(feature = "otel") {
            return Err(self.error_at(
                text,
                &["telemetry"],
                true,
                "[telemetry] exports traces, which this build of flow leaves out; rebuild flow-cli with --features otel",
            ));
        }
        for name in telemetry.headers.keys() {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                return Err(self.error_at(
                    text,
                    &["telemetry", "headers", name],
                    true,
                    format!("[telemetry] headers: {name:?} is not an HTTP header name"),
                ));
            }
        }
        if telemetry.timeout.is_some_and(|t| t.is_zero()) {
            return Err(self.error_at(
                text,
                &["telemetry", "timeout"],
                false,
                "[telemetry] timeout must not be zero",
            ));
        }
        Ok(())
    }

    /// Where traces go, when `[telemetry] otlp_endpoint` is set: the
    /// header secrets read now (a variable that is not set is an error
    /// naming the header, never a value).
    #[cfg(feature = "otel")]
    pub fn telemetry(&self) -> Result<Option<flow_signals::otel::TraceConfig>, CliError> {
        let Some(telemetry) = &self.spec.telemetry else {
            return Ok(None);
        };
        let Some(endpoint) = &telemetry.otlp_endpoint else {
            return Ok(None);
        };
        let mut headers = Vec::new();
        for (name, secret) in &telemetry.headers {
            let value = secret
                .value()
                .map_err(|e| self.error(format!("[telemetry] headers.{name}: {e}")))?;
            headers.push((name.clone(), value));
        }
        Ok(Some(flow_signals::otel::TraceConfig {
            endpoint: endpoint.as_str().to_string(),
            headers,
            service_name: telemetry
                .service_name
                .clone()
                .unwrap_or_else(|| "flow".to_string()),
            timeout: telemetry.timeout.unwrap_or(Duration::from_secs(5)),
        }))
    }

    /// Checks `[cost]`: each price at its key.
    fn check_cost(&self, text: &str) -> Result<(), CliError> {
        let Some(problem) = self.spec.cost.as_ref().and_then(|c| c.problem()) else {
            return Ok(());
        };
        let keys: &[&str] = if problem.key == "currency" {
            &["cost", "currency"]
        } else {
            &["cost", "prices", &problem.key]
        };
        Err(self.error_at(text, keys, true, problem.message))
    }

    /// `[cost]`: the price table, when the settings have one.
    pub fn prices(&self) -> Option<&flow_core::PriceTable> {
        self.spec.cost.as_ref()
    }

    /// The `[[notify]]` entries of the settings, a relative `ca_file`
    /// made the settings file's.
    pub fn notify(&self) -> Vec<flow_core::notify::NotifySpec> {
        self.spec
            .notify
            .iter()
            .map(|n| {
                let mut entry = n.get_ref().clone();
                if let flow_core::notify::NotifySpec::Email {
                    ca_file: Some(ca_file),
                    ..
                } = &mut entry
                {
                    *ca_file = self.resolve(ca_file);
                }
                entry
            })
            .collect()
    }

    /// `viewer_url`: where the viewer is reached (links in notifications).
    pub fn viewer_url(&self) -> Option<&str> {
        self.spec.viewer_url.as_deref()
    }

    /// Checks what types alone cannot; errors point at the key at fault.
    fn check(&self, text: &str) -> Result<(), CliError> {
        let lease_key = if self.spec.lease.heartbeat.is_some() {
            "heartbeat"
        } else {
            "ttl"
        };
        if self.heartbeat_interval() >= self.lease_ttl() {
            return Err(self.error_at(text, &["lease", lease_key], false, format!(
                "lease.heartbeat ({}) must be shorter than lease.ttl ({}), or the lease turns stale between heartbeats",
                humantime_serde::re::humantime::format_duration(self.heartbeat_interval()),
                humantime_serde::re::humantime::format_duration(self.lease_ttl()),
            )));
        }
        if self.heartbeat_interval().is_zero() {
            return Err(self.error_at(
                text,
                &["lease", "heartbeat"],
                false,
                "lease.heartbeat must not be zero",
            ));
        }
        for (table, names) in [
            ("settings", self.spec.settings.keys().collect::<Vec<_>>()),
            ("secrets", self.spec.secrets.keys().collect()),
        ] {
            for name in names {
                if !valid_setting_name(name) {
                    return Err(self.error_at(text, &[table, name], true, format!(
                        "setting name {name:?} is not valid: use letters, digits, '_' and '-' (it is written {{settings.NAME}} in flows)"
                    )));
                }
            }
        }
        if let Some(TokenText(token)) = &self.spec.serve.token {
            if !token.starts_with("env:") {
                if let Some(why) = token_problem(token) {
                    return Err(self.error_at(text, &["serve", "token"], false, why));
                }
                if token.chars().count() < MIN_SECRET_LEN {
                    return Err(self.error_at(text, &["serve", "token"], false, short_token()));
                }
            }
        }
        let mut variables: BTreeMap<String, &str> = BTreeMap::new();
        for (name, value) in &self.spec.secrets {
            if !value.starts_with("env:") && value.chars().count() < MIN_SECRET_LEN {
                return Err(self.error_at(text, &["secrets", name], false, format!(
                    "secret '{name}' is shorter than {MIN_SECRET_LEN} characters: masking it as *** wherever it appears would reveal it (use a real credential)"
                )));
            }
            let variable = flow_core::secret_env_var(name);
            if let Some(other) = variables.insert(variable.clone(), name) {
                return Err(self.error_at(text, &["secrets", name], true, format!(
                    "secrets '{other}' and '{name}' would both reach jobs as the environment variable {variable}; rename one"
                )));
            }
        }
        if let Some(name) = self
            .spec
            .settings
            .keys()
            .find(|n| self.spec.secrets.contains_key(*n))
        {
            return Err(self.error_at(
                text,
                &["secrets", name],
                true,
                format!("'{name}' is defined in both [settings] and [secrets]"),
            ));
        }
        Ok(())
    }

    /// Resolves a path from the file: `~/` is the home directory, relative
    /// paths are relative to the file's directory.
    fn resolve(&self, path: &Path) -> PathBuf {
        if let Ok(rest) = path.strip_prefix("~") {
            if let Some(home) = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf()) {
                return home.join(rest);
            }
        }
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }

    fn project_dirs(&self, what: &str, key: &str) -> Result<directories::ProjectDirs, CliError> {
        directories::ProjectDirs::from("", "", "flow").ok_or_else(|| {
            self.error(format!(
                "cannot find a per-user {what} directory (is HOME set?); set {key} in the settings file"
            ))
        })
    }

    /// Root of the per-flow log directories. Default: the XDG state
    /// directory's `logs` (`~/.local/state/flow/logs`).
    pub fn log_directory(&self) -> Result<PathBuf, CliError> {
        match &self.spec.log_directory {
            Some(p) => Ok(self.resolve(p)),
            None => {
                let dirs = self.project_dirs("state", "log_directory")?;
                let state = dirs.state_dir().unwrap_or_else(|| dirs.data_local_dir());
                Ok(state.join("logs"))
            }
        }
    }

    /// Where the default store file lives. Default: the XDG data directory
    /// (`~/.local/share/flow`).
    pub fn data_directory(&self) -> Result<PathBuf, CliError> {
        match &self.spec.data_directory {
            Some(p) => Ok(self.resolve(p)),
            None => Ok(self
                .project_dirs("data", "data_directory")?
                .data_dir()
                .to_path_buf()),
        }
    }

    /// Where flow names are looked up, if configured.
    pub fn flows_directory(&self) -> Option<PathBuf> {
        self.spec
            .flows_directory
            .as_deref()
            .map(|p| self.resolve(p))
    }

    pub fn number_of_clusters(&self) -> usize {
        self.spec.number_of_clusters.map_or(1, NonZeroUsize::get)
    }

    pub fn store(&self) -> StoreSettings {
        let s = &self.spec.store;
        StoreSettings {
            kind: s.kind,
            path: s.path.as_deref().map(|p| self.resolve(p)),
            synchronous: s.synchronous,
            busy_timeout: s.busy_timeout.unwrap_or(DEFAULT_BUSY_TIMEOUT),
            uri: s.uri.as_ref().map(|u| u.get_ref().clone()),
            database: s
                .database
                .as_ref()
                .map_or_else(|| DEFAULT_DATABASE.to_string(), |d| d.get_ref().clone()),
            server_selection_timeout: s
                .server_selection_timeout
                .unwrap_or(DEFAULT_SERVER_SELECTION_TIMEOUT),
            log_retention: s.log_retention.unwrap_or(DEFAULT_LOG_RETENTION),
            record_logs: s.record_logs.unwrap_or(true),
        }
    }

    pub fn cluster(&self) -> ClusterSettings {
        let c = &self.spec.cluster;
        let path = |p: &Option<PathBuf>| p.as_deref().map(|p| self.resolve(p));
        ClusterSettings {
            kind: c.kind,
            root: path(&c.root),
            work_dir: path(&c.work_dir),
            spark_submit: path(&c.spark_submit),
            pig: path(&c.pig),
            hadoop: path(&c.hadoop),
            env: c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            kill_grace: c.kill_grace,
            jobs_per_cluster: c.jobs_per_cluster,
        }
    }

    /// The `[cluster.emr]` settings (defaults when the table is absent).
    #[cfg(feature = "emr")]
    pub fn emr(&self) -> flow_cluster_emr::EmrConfig {
        self.spec
            .cluster
            .emr
            .as_ref()
            .map(|c| c.0.clone())
            .unwrap_or_default()
    }

    /// `[cluster.dataproc]`, validated, with its key files resolved
    /// against the settings file's directory.
    #[cfg(feature = "dataproc")]
    pub fn dataproc(&self) -> Option<flow_cluster_dataproc::DataprocConfig> {
        let mut config = self.spec.cluster.dataproc.clone()?;
        for path in [
            &mut config.credentials_file,
            &mut config.gcs.credentials_file,
        ]
        .into_iter()
        .flatten()
        {
            *path = self.resolve(path);
        }
        Some(config)
    }

    /// `[cluster.azure]`, validated (its secrets not read yet).
    #[cfg(feature = "azure")]
    pub fn azure(&self) -> Option<flow_cluster_azure::AzureConfig> {
        self.spec.cluster.azure.clone()
    }

    /// `[cluster.qubole]`, validated (its token not read yet).
    #[cfg(feature = "qubole")]
    pub fn qubole(&self) -> Option<flow_cluster_qubole::QuboleConfig> {
        self.spec.cluster.qubole.clone()
    }

    pub fn lease_ttl(&self) -> Duration {
        self.spec.lease.ttl.unwrap_or(DEFAULT_LEASE_TTL)
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.spec.lease.heartbeat.unwrap_or(DEFAULT_HEARTBEAT)
    }

    pub fn cancel_grace(&self) -> Duration {
        self.spec
            .engine
            .cancel_grace
            .unwrap_or(DEFAULT_CANCEL_GRACE)
    }

    /// Managed runs a `flow schedule` process runs at once unless
    /// `--concurrency` says otherwise (`[schedule] concurrency`, default 4).
    pub fn schedule_concurrency(&self) -> NonZeroUsize {
        self.spec
            .schedule
            .concurrency
            .unwrap_or(DEFAULT_SCHEDULE_CONCURRENCY)
    }

    /// Where `flow serve` listens unless `--bind` says otherwise. Default:
    /// `127.0.0.1:8080`.
    pub fn serve_bind(&self) -> std::net::SocketAddr {
        self.spec
            .serve
            .bind
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    /// Whether `flow serve` exports Prometheus series at `/metrics`
    /// (`[serve] metrics`, default on).
    pub fn serve_metrics(&self) -> bool {
        self.spec.serve.metrics.unwrap_or(true)
    }

    /// The token `flow serve` requires on requests that change state
    /// (`[serve] token`, `"env:VAR"` read from the environment now), if
    /// one is set.
    pub fn serve_token(&self) -> Result<Option<flow_core::Secret>, CliError> {
        let Some(TokenText(value)) = &self.spec.serve.token else {
            return Ok(None);
        };
        let token = match value.strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| {
                self.error(format!(
                    "[serve] token reads the environment variable {var}, which is not set (or not UTF-8)"
                ))
            })?,
            None => value.clone(),
        };
        if token.trim().is_empty() {
            return Err(self.error("[serve] token is empty"));
        }
        // Checked again here: a token from the environment is only known now.
        if let Some(why) = token_problem(&token) {
            return Err(self.error(format!("{why} (from {})", value_source(value))));
        }
        if token.chars().count() < MIN_SECRET_LEN {
            return Err(self.error(format!("{} (from {})", short_token(), value_source(value))));
        }
        Ok(Some(flow_core::Secret::new(token)))
    }

    /// The environment variables secrets are read from (`"env:VAR"` in
    /// `[secrets]`, `[serve] token` and `[store] uri`): removed from every
    /// job's environment, so a job sees a secret only through the
    /// `FLOW_SECRET_*` its command refers to.
    pub fn secret_sources(&self) -> Vec<String> {
        let mut vars: Vec<String> = self
            .spec
            .secrets
            .values()
            .map(String::as_str)
            .chain(self.spec.serve.token.as_ref().map(|t| t.0.as_str()))
            .chain(self.spec.store.uri.as_ref().map(|u| u.get_ref().as_str()))
            .chain(self.qubole_token_source())
            .filter_map(|written| written.strip_prefix("env:"))
            .chain(self.azure_secret_variables())
            .chain(self.lineage_key_variable())
            .map(str::to_string)
            .collect();
        vars.sort();
        vars.dedup();
        vars
    }

    /// The variables `[cluster.azure]`'s secrets are read from (the
    /// gateway's password, the storage credential, ARM's client secret and
    /// the cluster definition's).
    fn azure_secret_variables(&self) -> Vec<&str> {
        #[cfg(feature = "azure")]
        return self
            .spec
            .cluster
            .azure
            .as_ref()
            .map(|a| {
                [
                    &a.password,
                    &a.blob.key,
                    &a.blob.sas,
                    &a.blob.connection_string,
                ]
                .into_iter()
                .filter_map(|s| s.as_ref().and_then(|s| s.variable()))
                .chain(a.arm.iter().flat_map(|arm| arm.secret_variables()))
                .collect()
            })
            .unwrap_or_default();
        #[cfg(not(feature = "azure"))]
        return Vec::new();
    }

    /// The variable `[lineage] api_key` is read from, if it is.
    fn lineage_key_variable(&self) -> Option<&str> {
        self.lineage()?.api_key.as_ref()?.variable()
    }

    /// `[cluster.qubole] token` as written (`env:VAR`).
    fn qubole_token_source(&self) -> Option<&str> {
        #[cfg(feature = "qubole")]
        return self.spec.cluster.qubole.as_ref().map(|q| q.token.as_str());
        #[cfg(not(feature = "qubole"))]
        return None;
    }

    /// The values of `{settings.NAME}` placeholders. Secrets written
    /// `"env:VAR"` are read from the environment now; all secrets are
    /// masked wherever text leaves the process (`flow_core::mask`). A secret
    /// shorter than `MIN_SECRET_LEN` is refused.
    pub fn values(&self) -> Result<flow_core::Settings, CliError> {
        let mut values = flow_core::Settings::new();
        for (name, Scalar(value)) in &self.spec.settings {
            values = values.with_plain(name.clone(), value.clone());
        }
        for (name, value) in &self.spec.secrets {
            let value = match value.strip_prefix("env:") {
                Some(var) => std::env::var(var).map_err(|_| {
                    self.error(format!(
                        "secret '{name}' reads the environment variable {var}, which is not set (or not UTF-8)"
                    ))
                })?,
                None => value.clone(),
            };
            if value.chars().count() < MIN_SECRET_LEN {
                return Err(self.error(format!(
                    "secret '{name}' (from {}) is shorter than {MIN_SECRET_LEN} characters: masking it as *** wherever it appears would reveal it (use a real credential)",
                    value_source(&self.spec.secrets[name])
                )));
            }
            values = values.with_secret(name.clone(), value);
        }
        Ok(values)
    }
}

use flow_core::context::MIN_SECRET_LEN;

/// Why a `[serve] token` is refused as too short: it is masked like any
/// secret, so the same minimum applies.
fn short_token() -> String {
    format!(
        "[serve] token is shorter than {MIN_SECRET_LEN} characters: it is masked as *** wherever it appears, which would reveal a short one (and a short token is easy to guess)"
    )
}

/// Why a `[serve] token` could never match a request (whitespace around
/// it, a character no HTTP header carries as text), if it could not: the
/// viewer's rule, checked here so the settings file's line is named.
fn token_problem(token: &str) -> Option<String> {
    #[cfg(feature = "serve")]
    let why = flow_server::security::token_problem(token);
    // Without the viewer no request ever reads the token.
    #[cfg(not(feature = "serve"))]
    let why: Option<&str> = {
        let _ = token;
        None
    };
    why.map(|why| format!("[serve] token could never match a request: {why}"))
}

/// Where a secret's value comes from, for messages (never the value).
fn value_source(written: &str) -> String {
    match written.strip_prefix("env:") {
        Some(var) => format!("the environment variable {var}"),
        None => "the settings file".into(),
    }
}

/// The largest settings file read: 1 MiB.
pub const MAX_SETTINGS_FILE: u64 = 1024 * 1024;

fn valid_setting_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The byte offset of `keys` (tables, then a key) in `text`: of the key when
/// `at_key`, else of its value.
fn locate(text: &str, keys: &[&str], at_key: bool) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut keys = keys.iter().peekable();
    while let Some(key) = keys.next() {
        let (k, mut v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *key)?;
        // In an array (of tables), the next key is the element's index.
        while let (DeValue::Array(items), Some(index)) = (v.get_ref(), keys.peek()) {
            v = items.get(index.parse::<usize>().ok()?)?;
            keys.next();
        }
        if keys.peek().is_none() {
            return Some(if at_key {
                k.span().start
            } else {
                v.span().start
            });
        }
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
    None
}

fn current_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SettingsFile, CliError> {
        SettingsFile::parse(text, Path::new("/etc/x/flow.toml"))
    }

    #[test]
    fn defaults_are_per_user() {
        // The XDG directories of whoever runs the tests; the binary's
        // end-to-end test checks them with a HOME of its own.
        let base = directories::BaseDirs::new()
            .expect("the tests need a HOME to resolve per-user directories");
        let s = SettingsFile::defaults();
        let data = s.data_directory().expect("a default data directory");
        let logs = s.log_directory().expect("a default log directory");
        assert_eq!(data, base.data_dir().join("flow"));
        let state = base.state_dir().unwrap_or_else(|| base.data_local_dir());
        assert_eq!(logs, state.join("flow").join("logs"));
        assert_eq!(s.store().kind, StoreKind::Sqlite);
        assert_eq!(s.cluster().kind, ClusterKind::Local);
        assert_eq!(s.number_of_clusters(), 1);
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let s = parse(
            "log_directory = \"logs\"\n[store]\npath = \"/var/db/f.db\"\n[cluster]\nroot = \".\"\n",
        )
        .unwrap();
        assert_eq!(s.log_directory().unwrap(), Path::new("/etc/x/logs"));
        assert_eq!(s.store().path.unwrap(), Path::new("/var/db/f.db"));
        assert_eq!(s.cluster().root.unwrap(), Path::new("/etc/x/."));
    }

    /// `[telemetry]` in a build without `otel` is refused at its place,
    /// naming the feature; with it, bad keys point at themselves.
    #[test]
    fn telemetry_needs_the_otel_feature_and_valid_keys() {
        let text =
            "log_directory = \"logs\"\n\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n";
        let parsed = parse(text);
        if cfg!(feature = "otel") {
            assert!(parsed.is_ok());
            let e = parse("[telemetry]\ntimeout = \"0s\"\n").unwrap_err();
            assert!(e.message.starts_with("/etc/x/flow.toml:2:11: "), "{e}");
            let e = parse("[telemetry.headers]\n\"Bad Name\" = \"env:X\"\n").unwrap_err();
            assert!(e.message.starts_with("/etc/x/flow.toml:2:1: "), "{e}");
            assert!(e.message.contains("not an HTTP header name"), "{e}");
        } else {
            let e = parsed.expect_err("refused without the otel feature");
            assert!(e.message.starts_with("/etc/x/flow.toml:3:2: "), "{e}");
            assert!(e.message.contains("--features otel"), "{e}");
        }
        let e = parse("[telemetry]\notlp_endpoint = \"ftp://x\"\n").unwrap_err();
        assert!(e.message.contains("not an http:// or https:// URL"), "{e}");
    }

    #[test]
    fn errors_have_line_and_column() {
        let e = parse("log_directory = \"logs\"\n[store]\nkind = \"sqlite\"\npaht = \"x\"\n")
            .unwrap_err();
        assert!(e.message.starts_with("/etc/x/flow.toml:4:1: "), "{e}");
        assert!(e.message.contains("paht"), "{e}");
        let e = parse("number_of_clusters = \"two\"\n").unwrap_err();
        assert!(e.message.starts_with("/etc/x/flow.toml:1:22: "), "{e}");
        let e = parse("[lease]\nttl = \"1s\"\nheartbeat = \"5s\"\n").unwrap_err();
        assert!(e.message.contains("shorter than lease.ttl"), "{e}");
        assert!(e.message.starts_with("/etc/x/flow.toml:3:13: "), "{e}");
        let e = parse("[lease]\nttl = \"5s\"\n").unwrap_err();
        assert!(e.message.starts_with("/etc/x/flow.toml:2:7: "), "{e}");
        let e = parse("[settings]\nok = 1\n\"b d\" = 2\n").unwrap_err();
        assert!(e.message.starts_with("/etc/x/flow.toml:3:1: "), "{e}");
        assert!(e.message.contains("\"b d\" is not valid"), "{e}");
        let e = parse("[settings]\nx = 1\n[secrets]\nx = \"abcdefgh\"\n").unwrap_err();
        assert!(e.message.starts_with("/etc/x/flow.toml:4:1: "), "{e}");
        let e = parse("log_directory = \"a\"\nlog_directory = \"b\"\n").unwrap_err();
        assert!(
            e.message
                .starts_with("/etc/x/flow.toml:2:1: duplicate key `log_directory`"),
            "{e}"
        );
    }

    #[test]
    fn short_and_colliding_secrets_are_refused() {
        let e = parse("[secrets]\npin = \"1234\"\n").unwrap_err();
        assert!(e.message.starts_with("/etc/x/flow.toml:2:7: "), "{e}");
        assert!(e.message.contains("shorter than 8 characters"), "{e}");
        assert!(!e.message.contains("1234"), "{e}");
        let e = parse("[secrets]\na-b = \"12345678\"\na_b = \"abcdefgh\"\n").unwrap_err();
        assert!(e.message.contains("FLOW_SECRET_A_B"), "{e}");
        std::env::set_var("FLOW_CLI_TEST_SHORT_SECRET", "abc");
        let s = parse("[secrets]\npin = \"env:FLOW_CLI_TEST_SHORT_SECRET\"\n").unwrap();
        let e = s.values().unwrap_err();
        assert!(
            e.message
                .contains("FLOW_CLI_TEST_SHORT_SECRET) is shorter than 8"),
            "{e}"
        );
    }

    #[test]
    fn serve_token_and_bind() {
        std::env::set_var("FLOW_CLI_TEST_TOKEN", "t0k3n-t0k3n");
        let s = parse("[serve]\nbind = \"0.0.0.0:9000\"\ntoken = \"env:FLOW_CLI_TEST_TOKEN\"\n")
            .unwrap();
        assert_eq!(s.serve_bind().port(), 9000);
        assert_eq!(s.serve_token().unwrap().unwrap().expose(), "t0k3n-t0k3n");
        assert!(!format!("{s:?}").contains("t0k3n"));
        let s = parse("[serve]\ntoken = \"literal-token\"\n").unwrap();
        assert!(!format!("{s:?}").contains("literal-token"));
        assert_eq!(s.serve_token().unwrap().unwrap().expose(), "literal-token");
        let e = parse("[serve]\nbind = \"nowhere\"\n").unwrap_err();
        assert!(e.message.starts_with("/etc/x/flow.toml:2:8: "), "{e}");
        let s = parse("[serve]\ntoken = \"env:FLOW_CLI_TEST_UNSET_TOKEN\"\n").unwrap();
        assert!(s
            .serve_token()
            .unwrap_err()
            .message
            .contains("FLOW_CLI_TEST_UNSET_TOKEN"));
        assert_eq!(
            SettingsFile::defaults().serve_bind().to_string(),
            "127.0.0.1:8080"
        );
    }

    #[test]
    fn schedule_concurrency_key() {
        assert_eq!(SettingsFile::defaults().schedule_concurrency().get(), 4);
        let s = parse("[schedule]\nconcurrency = 8\n").unwrap();
        assert_eq!(s.schedule_concurrency().get(), 8);
        let e = parse("[schedule]\nconcurrency = 0\n").unwrap_err();
        assert!(e.message.starts_with("/etc/x/flow.toml:2:15: "), "{e}");
        let e = parse("[schedule]\nconcurrency = 2\nlag = \"1h\"\n").unwrap_err();
        assert!(e.message.starts_with("/etc/x/flow.toml:3:1: "), "{e}");
        assert!(e.message.contains("unknown field `lag`"), "{e}");
    }

    #[test]
    fn a_short_serve_token_is_refused() {
        let e = parse("[serve]\ntoken = \"tok-123\"\n").unwrap_err();
        assert!(
            e.message.starts_with("/etc/x/flow.toml:2:9: ")
                && e.message.contains("[serve] token is shorter than 8")
                && !e.message.contains("tok-123"),
            "{e}"
        );
        assert!(parse("[serve]\ntoken = \"tok-1234\"\n").is_ok());
        std::env::set_var("FLOW_CLI_TEST_SHORT_TOKEN", "tok-123");
        let s = parse("[serve]\ntoken = \"env:FLOW_CLI_TEST_SHORT_TOKEN\"\n").unwrap();
        let e = s.serve_token().unwrap_err();
        assert!(
            e.message.contains("[serve] token is shorter than 8")
                && e.message.contains("FLOW_CLI_TEST_SHORT_TOKEN")
                && !e.message.contains("tok-123"),
            "{e}"
        );
    }

    #[test]
    fn settings_and_secrets() {
        std::env::set_var("FLOW_CLI_TEST_SECRET", "hunter2-hunter2");
        let s = parse("[settings]\nbucket = \"b\"\nnap = 3\n[secrets]\ntoken = \"env:FLOW_CLI_TEST_SECRET\"\n").unwrap();
        let v = s.values().unwrap();
        assert_eq!(v.get("nap").unwrap().expose(), "3");
        assert_eq!(v.get("token").unwrap().expose(), "hunter2-hunter2");
        assert!(!format!("{v:?}").contains("hunter2"));
        let s = parse("[secrets]\ntoken = \"env:FLOW_CLI_TEST_UNSET_VARIABLE\"\n").unwrap();
        assert!(s
            .values()
            .unwrap_err()
            .message
            .contains("FLOW_CLI_TEST_UNSET_VARIABLE"));
    }
}
