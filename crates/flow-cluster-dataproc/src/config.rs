//! [`DataprocConfig`] (the `[cluster.dataproc]` section of `flow.toml`) and
//! its builder.

use crate::cluster::DataprocClusterFactory;
use crate::error::DataprocError;
use flow_cloud::{Clock, JobLogs, PollConfig, RetryConfig, TailOptions, TokioClock};
use flow_fs_gcs::GcsConfig;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The longest base name: Dataproc allows 52 characters and `-NN` is added.
const MAX_BASE_NAME: usize = 48;

/// One group of machines (the master or the workers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceGroup {
    /// `machineTypeUri`, e.g. `n2-standard-4`.
    pub machine_type: String,
    /// `numInstances`.
    pub count: u32,
    /// `diskConfig.bootDiskSizeGb`; default: Dataproc's.
    pub boot_disk_gb: Option<u32>,
}

impl InstanceGroup {
    fn new(count: u32) -> Self {
        InstanceGroup {
            machine_type: "n2-standard-4".into(),
            count,
            boot_disk_gb: None,
        }
    }
}

impl Default for InstanceGroup {
    fn default() -> Self {
        InstanceGroup::new(2)
    }
}

fn default_master() -> InstanceGroup {
    InstanceGroup::new(1)
}

/// The keys of a `master` or `workers` table as written (each may be left
/// out, and is then the group's own default: 1 master, 2 workers).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceGroupKeys {
    machine_type: Option<String>,
    count: Option<u32>,
    boot_disk_gb: Option<u32>,
}

impl InstanceGroupKeys {
    fn over(self, base: InstanceGroup) -> InstanceGroup {
        InstanceGroup {
            machine_type: self.machine_type.unwrap_or(base.machine_type),
            count: self.count.unwrap_or(base.count),
            boot_disk_gb: self.boot_disk_gb.or(base.boot_disk_gb),
        }
    }
}

fn master_group<'de, D: Deserializer<'de>>(deserializer: D) -> Result<InstanceGroup, D::Error> {
    Ok(InstanceGroupKeys::deserialize(deserializer)?.over(default_master()))
}

fn workers_group<'de, D: Deserializer<'de>>(deserializer: D) -> Result<InstanceGroup, D::Error> {
    Ok(InstanceGroupKeys::deserialize(deserializer)?.over(InstanceGroup::default()))
}

/// Settings of the Dataproc cluster. Holds a path to a key file, never a
/// key or a token, so it is safe to `Debug` and to log.
///
/// ```toml
/// [cluster.dataproc]
/// project = "my-project"
/// region = "europe-west1"
/// zone = "europe-west1-b"
/// code_bucket = "my-code"                # application = "jobs/x.py" → gs://my-code/jobs/x.py
/// image_version = "2.2-debian12"
/// idle_delete_ttl = "2h"
/// master = { machine_type = "n2-standard-4" }
/// workers = { machine_type = "n2-standard-8", count = 4 }
/// [cluster.dataproc.gcs]
/// bucket = "my-data"
/// ```
///
/// The keys are the words every cloud cluster uses for the same idea
/// (`docs/src/reference/settings.md`, "One vocabulary").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataprocConfig {
    /// The Google Cloud project (required).
    pub project: String,
    /// The Dataproc region, e.g. `europe-west1` (required).
    pub region: String,
    /// `gceClusterConfig.zoneUri`; default: Dataproc's auto zone placement.
    pub zone: Option<String>,
    /// Clusters are named `NAME-0`, `NAME-1`, ...; default
    /// `flow-FLOW-TIMEPERIOD`, so concurrent runs never share one. An
    /// existing `RUNNING` cluster of that name is reused (and left up).
    pub name: Option<String>,
    /// Job files (applications, scripts, jars) and initialization actions
    /// written without a scheme are `gs://CODE_BUCKET/PATH`.
    pub code_bucket: Option<String>,
    /// A fake or an emulator of the Dataproc API (`http://127.0.0.1:PORT`):
    /// requests to it carry no credentials. Default: the regional endpoint
    /// `https://REGION-dataproc.googleapis.com`, with credentials.
    pub endpoint: Option<String>,
    /// Send credentials to `endpoint` too: it is a private or proxy
    /// endpoint of the real API rather than a fake.
    pub endpoint_auth: bool,
    /// A service-account key file. Default: Application Default Credentials
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud, the metadata server). Also
    /// used by the GCS filesystem unless `gcs.credentials_file` is set.
    pub credentials_file: Option<PathBuf>,
    /// The master node group: machine type and count (1 unless set).
    #[serde(deserialize_with = "master_group")]
    pub master: InstanceGroup,
    /// The worker node group: machine type and count (2 unless set).
    #[serde(deserialize_with = "workers_group")]
    pub workers: InstanceGroup,
    /// `softwareConfig.imageVersion`, e.g. `2.2-debian12`; default: Dataproc's.
    pub image_version: Option<String>,
    /// `softwareConfig.properties`, e.g. `"spark:spark.executor.memory" = "4g"`.
    pub properties: BTreeMap<String, String>,
    /// Initialization actions (executables run on every node).
    pub init_actions: Vec<String>,
    /// `executionTimeout` of each initialization action.
    #[serde(with = "humantime_serde")]
    pub init_action_timeout: Option<Duration>,
    /// Labels of the clusters (and, with the flow's, of the jobs).
    pub labels: BTreeMap<String, String>,
    /// `lifecycleConfig.idleDeleteTtl`: Dataproc deletes a cluster idle this
    /// long, a safety net if no engine ever terminates it.
    #[serde(with = "humantime_serde")]
    pub idle_delete_ttl: Option<Duration>,
    /// `gceClusterConfig.serviceAccount` of the cluster's machines.
    pub service_account: Option<String>,
    /// `gceClusterConfig.subnetworkUri`.
    pub subnetwork: Option<String>,
    /// Also delete reused clusters (those found `RUNNING` before the run) at
    /// the end. Default: they are left up.
    pub terminate_reused: bool,
    /// `jarFileUris` of every Pig job (UDF jars).
    pub pig_jar_uris: Vec<String>,
    /// Jobs a cluster runs at once: the engine gives each cluster this many
    /// steps at a time (YARN shares the cluster among them). Default 1.
    pub jobs_per_cluster: std::num::NonZeroUsize,
    /// How jobs are polled: floor, backoff, cap, timeout of one wait.
    pub poll: PollConfig,
    /// How often a launching or deleting cluster (its operation) is asked.
    #[serde(with = "humantime_serde")]
    pub launch_poll: Duration,
    /// The longest wait for a cluster to be `RUNNING`.
    #[serde(with = "humantime_serde")]
    pub launch_timeout: Duration,
    /// The longest wait for a cluster's deletion.
    #[serde(with = "humantime_serde")]
    pub terminate_timeout: Duration,
    /// The longest wait for a cancelled job to be `CANCELLED`.
    #[serde(with = "humantime_serde")]
    pub cancel_timeout: Duration,
    /// Retries of 429, 5xx and connection failures (`Retry-After` honoured).
    pub retry: RetryConfig,
    /// The longest wait for a TCP (and TLS) connection to the API.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The longest whole API request (every Dataproc answer is small): a
    /// connection that hangs fails, and is retried, instead of blocking a
    /// poll, a launch or a deletion past its own timeout.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How much of a job's driver output goes to the step log (and its last
    /// `error_bytes` into a failed job's error), and how long to wait for it.
    #[serde(deserialize_with = "job_logs")]
    pub job_logs: JobLogs,
    /// The cluster's filesystem (`mkdir`, `cp`, ... actions).
    pub gcs: GcsConfig,
}

impl Default for DataprocConfig {
    fn default() -> Self {
        DataprocConfig {
            project: String::new(),
            region: String::new(),
            zone: None,
            name: None,
            code_bucket: None,
            endpoint: None,
            endpoint_auth: false,
            credentials_file: None,
            master: default_master(),
            workers: InstanceGroup::default(),
            image_version: None,
            properties: BTreeMap::new(),
            init_actions: Vec::new(),
            init_action_timeout: None,
            labels: BTreeMap::new(),
            idle_delete_ttl: None,
            service_account: None,
            subnetwork: None,
            terminate_reused: false,
            pig_jar_uris: Vec::new(),
            jobs_per_cluster: std::num::NonZeroUsize::MIN,
            poll: default_poll(),
            launch_poll: Duration::from_secs(10),
            launch_timeout: Duration::from_secs(30 * 60),
            terminate_timeout: Duration::from_secs(30 * 60),
            cancel_timeout: Duration::from_secs(5 * 60),
            retry: RetryConfig::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            job_logs: default_job_logs(),
            gcs: GcsConfig::default(),
        }
    }
}

/// A driver output is written as the job runs: 30 s is long enough.
fn default_job_logs() -> JobLogs {
    JobLogs::from_tail(TailOptions {
        max_bytes: 16 * 1024,
        wait: Duration::from_secs(30),
        interval: Duration::from_secs(5),
    })
}

/// A `job_logs` table, the keys it leaves out from [`default_job_logs`].
fn job_logs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<JobLogs, D::Error> {
    flow_cloud::deserialize_job_logs_over(deserializer, default_job_logs())
}

/// A 1 s floor and a 3 s cap: a job that ends is noticed 0.5 s after its
/// end on average (1.5 s once it runs long), with one request per second
/// at most.
fn default_poll() -> PollConfig {
    PollConfig {
        cap: Duration::from_secs(3),
        ..PollConfig::default()
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> Result<(), DataprocError> {
    Err(DataprocError::Invalid {
        field,
        message: message.into(),
    })
}

/// Dataproc resource names: a lowercase letter, then lowercase letters,
/// digits and hyphens, not ending with a hyphen.
pub(crate) fn is_resource_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_label(text: &str, key: bool) -> bool {
    text.len() <= 63
        && (!key || text.starts_with(|c: char| c.is_ascii_lowercase()))
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl DataprocConfig {
    /// A builder starting from these settings.
    pub fn builder(self) -> DataprocClusterFactoryBuilder {
        DataprocClusterFactoryBuilder {
            config: self,
            clock: None,
        }
    }

    /// Checks what types alone cannot; called when the settings are loaded
    /// ([`deserialize_validated`]) and by the builder.
    pub fn validate(&self) -> Result<(), DataprocError> {
        if self.project.trim().is_empty() {
            return invalid("project", "required: the Google Cloud project");
        }
        if !self
            .project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
        {
            return invalid("project", format!("{:?} is not a project id", self.project));
        }
        if self.region.trim().is_empty() {
            return invalid("region", "required: a Dataproc region, e.g. europe-west1");
        }
        if !is_resource_name(&self.region) {
            return invalid("region", format!("{:?} is not a region", self.region));
        }
        if let Some(zone) = &self.zone {
            if !zone.starts_with(&self.region) && !zone.contains('/') {
                return invalid(
                    "zone",
                    format!("{zone:?} is not in region {:?}", self.region),
                );
            }
        }
        if let Some(name) = &self.name {
            if !is_resource_name(name) || name.len() > MAX_BASE_NAME {
                return invalid(
                    "name",
                    format!(
                        "{name:?}: use a lowercase letter, then up to {} lowercase letters, digits or hyphens (not ending with one); -0, -1, ... are added",
                        MAX_BASE_NAME - 1
                    ),
                );
            }
        }
        if let Some(bucket) = &self.code_bucket {
            if bucket.len() < 3 || bucket.contains('/') || bucket.contains(':') {
                return invalid(
                    "code_bucket",
                    format!("{bucket:?} is a bucket name (without gs://)"),
                );
            }
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return invalid(
                    "endpoint",
                    format!("{endpoint:?} is not an http:// or https:// URL"),
                );
            }
        }
        if !matches!(self.master.count, 1 | 3) {
            return invalid(
                "master.count",
                format!("{}: Dataproc has 1 or 3 masters", self.master.count),
            );
        }
        if self.workers.count == 1 {
            return invalid(
                "workers.count",
                "1: Dataproc needs 0 (a single-node cluster) or at least 2 workers",
            );
        }
        for (field, group) in [
            ("master.machine_type", &self.master),
            ("workers.machine_type", &self.workers),
        ] {
            if group.machine_type.trim().is_empty() {
                return invalid(field, "must not be empty");
            }
        }
        for (key, value) in &self.labels {
            if !is_label(key, true) || !is_label(value, false) {
                return invalid(
                    "labels",
                    format!("{key:?} = {value:?}: keys and values are lowercase letters, digits, '-' and '_' (keys start with a letter), at most 63 characters"),
                );
            }
        }
        for (field, uris) in [
            ("init_actions", &self.init_actions),
            ("pig_jar_uris", &self.pig_jar_uris),
        ] {
            for uri in uris {
                crate::jobs::resolve_uri(uri, self.code_bucket.as_deref())
                    .map_err(|message| DataprocError::Invalid { field, message })?;
            }
        }
        if self.poll.floor.is_zero() {
            return invalid("poll.floor", "must not be zero");
        }
        if self.poll.cap < self.poll.floor {
            return invalid("poll.cap", "must not be shorter than poll.floor");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must not be zero");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must not be zero");
        }
        if self.launch_poll.is_zero() {
            return invalid("launch_poll", "must not be zero");
        }
        if self
            .idle_delete_ttl
            .is_some_and(|t| t < Duration::from_secs(600))
        {
            return invalid("idle_delete_ttl", "Dataproc's minimum is 10 minutes");
        }
        self.gcs.validate().map_err(|e| DataprocError::Invalid {
            field: "gcs",
            message: e.to_string(),
        })?;
        Ok(())
    }

    /// The API's base URL and whether requests to it carry credentials.
    pub(crate) fn api_endpoint(&self) -> (String, bool) {
        match &self.endpoint {
            Some(url) => (url.trim_end_matches('/').to_string(), self.endpoint_auth),
            None if self.region == "global" => ("https://dataproc.googleapis.com".into(), true),
            None => (
                format!("https://{}-dataproc.googleapis.com", self.region),
                true,
            ),
        }
    }
}

/// For a settings file: deserializes a [`DataprocConfig`] and validates it,
/// so a bad value is reported where the section is (the TOML parser adds
/// the line and column).
///
/// ```text
/// #[serde(default, deserialize_with = "flow_cluster_dataproc::deserialize_validated")]
/// dataproc: Option<DataprocConfig>,
/// ```
pub fn deserialize_validated<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DataprocConfig>, D::Error> {
    let config = DataprocConfig::deserialize(deserializer)?;
    config.validate().map_err(serde::de::Error::custom)?;
    Ok(Some(config))
}

/// Builds a [`DataprocClusterFactory`]; every `with_*` sets one
/// [`DataprocConfig`] field.
///
/// ```no_run
/// use flow_cluster_dataproc::DataprocClusterFactoryBuilder;
/// let factory = DataprocClusterFactoryBuilder::new("my-project", "europe-west1")
///     .with_code_bucket("my-code")
///     .with_workers("n2-standard-8", 4)
///     .build()?;
/// # Ok::<(), flow_cluster_dataproc::DataprocError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct DataprocClusterFactoryBuilder {
    config: DataprocConfig,
    clock: Option<Arc<dyn Clock>>,
}

impl DataprocClusterFactoryBuilder {
    flow_cloud::cluster_builder_setters!(DataprocConfig);

    /// A builder for a cluster in `project` and `region`, with the default settings.
    pub fn new(project: impl Into<String>, region: impl Into<String>) -> Self {
        DataprocConfig {
            project: project.into(),
            region: region.into(),
            ..DataprocConfig::default()
        }
        .builder()
    }
    /// Sets [`DataprocConfig::zone`].
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.config.zone = Some(zone.into());
        self
    }
    /// Sets [`DataprocConfig::name`].
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }
    /// Sets [`DataprocConfig::jobs_per_cluster`].
    pub fn with_jobs_per_cluster(mut self, jobs: std::num::NonZeroUsize) -> Self {
        self.config.jobs_per_cluster = jobs;
        self
    }
    /// Sets [`DataprocConfig::code_bucket`].
    pub fn with_code_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.config.code_bucket = Some(bucket.into());
        self
    }
    /// Sets [`DataprocConfig::endpoint`].
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.endpoint = Some(url.into());
        self
    }
    /// Credentials go to the `endpoint` too (not a fake).
    pub fn with_endpoint_auth(mut self, auth: bool) -> Self {
        self.config.endpoint_auth = auth;
        self
    }
    /// Sets [`DataprocConfig::credentials_file`].
    pub fn with_credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.credentials_file = Some(path.into());
        self
    }
    /// Sets [`DataprocConfig::master`].
    pub fn with_master(mut self, machine_type: impl Into<String>, count: u32) -> Self {
        self.config.master.machine_type = machine_type.into();
        self.config.master.count = count;
        self
    }
    /// Sets [`DataprocConfig::workers`].
    pub fn with_workers(mut self, machine_type: impl Into<String>, count: u32) -> Self {
        self.config.workers.machine_type = machine_type.into();
        self.config.workers.count = count;
        self
    }
    /// Sets [`DataprocConfig::image_version`].
    pub fn with_image_version(mut self, version: impl Into<String>) -> Self {
        self.config.image_version = Some(version.into());
        self
    }
    /// Adds to [`DataprocConfig::init_actions`].
    pub fn with_init_action(mut self, uri: impl Into<String>) -> Self {
        self.config.init_actions.push(uri.into());
        self
    }
    /// Adds to [`DataprocConfig::labels`].
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.labels.insert(key.into(), value.into());
        self
    }
    /// Sets [`DataprocConfig::idle_delete_ttl`].
    pub fn with_idle_delete_ttl(mut self, ttl: Duration) -> Self {
        self.config.idle_delete_ttl = Some(ttl);
        self
    }
    /// Sets [`DataprocConfig::terminate_reused`].
    pub fn with_terminate_reused(mut self, terminate: bool) -> Self {
        self.config.terminate_reused = terminate;
        self
    }
    /// Sets [`DataprocConfig::connect_timeout`] and
    /// [`DataprocConfig::request_timeout`].
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.config.connect_timeout = connect;
        self.config.request_timeout = request;
        self
    }
    /// Sets [`DataprocConfig::gcs`].
    pub fn with_gcs(mut self, gcs: GcsConfig) -> Self {
        self.config.gcs = gcs;
        self
    }

    /// Validates the settings and makes the HTTP client, the credentials (a
    /// key file is read now; Application Default Credentials are looked up
    /// on the first request) and the GCS filesystem. Needs no runtime and
    /// sends no request.
    pub fn build(self) -> Result<DataprocClusterFactory, DataprocError> {
        self.config.validate()?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(TokioClock::new()));
        DataprocClusterFactory::new(self.config, clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DataprocConfig, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            #[serde(default, deserialize_with = "deserialize_validated")]
            dataproc: Option<DataprocConfig>,
        }
        toml::from_str::<Wrapper>(text)
            .map(|w| w.dataproc.unwrap())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn settings_parse_with_defaults() {
        let c = parse(
            "[dataproc]\nproject = \"p\"\nregion = \"europe-west1\"\nworkers = { count = 4 }\nidle_delete_ttl = \"2h\"\n[dataproc.poll]\nfloor = \"2s\"\ncap = \"10s\"\n[dataproc.gcs]\nbucket = \"data\"\n",
        )
        .unwrap();
        assert_eq!(c.workers.count, 4);
        assert_eq!(c.workers.machine_type, "n2-standard-4");
        assert_eq!(c.master.count, 1);
        assert_eq!(c.idle_delete_ttl, Some(Duration::from_secs(7200)));
        assert_eq!(c.poll.floor, Duration::from_secs(2));
        assert_eq!(c.gcs.bucket.as_deref(), Some("data"));
        assert_eq!(
            c.api_endpoint(),
            ("https://europe-west1-dataproc.googleapis.com".into(), true)
        );
    }

    #[test]
    fn a_group_table_keeps_the_defaults_of_its_role_for_what_it_leaves_out() {
        let c = parse(
            "[dataproc]\nproject = \"p\"\nregion = \"europe-west1\"\nmaster = { machine_type = \"n2-standard-8\" }\nworkers = { boot_disk_gb = 100 }\n",
        )
        .unwrap();
        assert_eq!(
            (c.master.machine_type.as_str(), c.master.count),
            ("n2-standard-8", 1)
        );
        assert_eq!((c.workers.count, c.workers.boot_disk_gb), (2, Some(100)));
        let e = parse("[dataproc]\nproject = \"p\"\nregion = \"eu\"\nmaster = { cores = 4 }\n")
            .unwrap_err();
        assert!(e.contains("unknown field `cores`"), "{e}");
    }

    #[test]
    fn bad_values_are_named_with_their_place() {
        let e = parse("[dataproc]\nregion = \"europe-west1\"\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("project"), "{e}");
        let e = parse("[dataproc]\nproject = \"p\"\nregion = \"eu\"\nworkers = { count = 1 }\n")
            .unwrap_err();
        assert!(e.contains("workers.count"), "{e}");
        let e = parse("[dataproc]\nproject = \"p\"\nregion = \"eu\"\nname = \"Big_One\"\n")
            .unwrap_err();
        assert!(e.contains("name"), "{e}");
        let e = parse("[dataproc]\nproject = \"p\"\nregion = \"eu\"\ntoken = \"x\"\n").unwrap_err();
        assert!(e.contains("line 4") && e.contains("token"), "{e}");
        let e = parse("[dataproc]\nproject = \"p\"\nregion = \"eu\"\nendpoint = \"127.0.0.1:1\"\n")
            .unwrap_err();
        assert!(e.contains("endpoint"), "{e}");
        let e = parse(
            "[dataproc]\nproject = \"p\"\nregion = \"eu\"\n[dataproc.gcs]\nupload_chunk_size = 1\n",
        )
        .unwrap_err();
        assert!(e.contains("upload_chunk_size"), "{e}");
    }

    #[test]
    fn an_endpoint_is_a_fake_without_credentials() {
        let c = DataprocConfig {
            endpoint: Some("http://127.0.0.1:9/".into()),
            ..DataprocConfig::default()
        };
        assert_eq!(c.api_endpoint(), ("http://127.0.0.1:9".into(), false));
    }
}
