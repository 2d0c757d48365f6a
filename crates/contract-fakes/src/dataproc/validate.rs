//! What Dataproc refuses, from the REST v1 reference: unknown fields
//! (`Unknown name "x" at 'job.sparkJob': Cannot find field.`), unknown
//! query parameters, a job without its required fields, a malformed
//! `requestId`, job id, cluster name, label, duration, and list filter.
//! Every refusal is a 400 `INVALID_ARGUMENT` in Google's shape.
//!
//! Output-only fields (a job's `status`, a cluster's `clusterUuid`...) are
//! accepted in requests and ignored, as the API does.

use serde_json::{Map, Value};

/// How a field of a message is checked.
#[derive(Clone, Copy)]
pub(super) enum Field {
    /// A string, number or boolean.
    Scalar,
    /// A list of scalars.
    List,
    /// A `map<string, string>`.
    Map,
    /// A nested message.
    Msg(&'static [(&'static str, Field)]),
    /// A list of nested messages.
    Msgs(&'static [(&'static str, Field)]),
    /// Known to the API, not modelled by the fake: accepted as it is.
    Any,
    /// Output only: ignored in a request.
    Output,
}

use Field::{Any, List, Map as M, Msg, Msgs, Output, Scalar};

const LOGGING: &[(&str, Field)] = &[("driverLogLevels", M)];

/// `HadoopJob` and `SparkJob`: `mainJarFileUri` or `mainClass` (a oneof).
const JVM_JOB: &[(&str, Field)] = &[
    ("mainJarFileUri", Scalar),
    ("mainClass", Scalar),
    ("args", List),
    ("jarFileUris", List),
    ("fileUris", List),
    ("archiveUris", List),
    ("properties", M),
    ("loggingConfig", Msg(LOGGING)),
];

const PYSPARK_JOB: &[(&str, Field)] = &[
    ("mainPythonFileUri", Scalar),
    ("args", List),
    ("pythonFileUris", List),
    ("jarFileUris", List),
    ("fileUris", List),
    ("archiveUris", List),
    ("properties", M),
    ("loggingConfig", Msg(LOGGING)),
];

const PIG_JOB: &[(&str, Field)] = &[
    ("queryFileUri", Scalar),
    ("queryList", Msg(&[("queries", List)])),
    ("continueOnFailure", Scalar),
    ("scriptVariables", M),
    ("properties", M),
    ("jarFileUris", List),
    ("loggingConfig", Msg(LOGGING)),
];

/// The job types the fake runs.
pub(super) const JOB_TYPES: [&str; 4] = ["pysparkJob", "sparkJob", "pigJob", "hadoopJob"];

/// The API's other job types: known, not served by the fake.
const OTHER_JOB_TYPES: [&str; 6] = [
    "hiveJob",
    "sparkRJob",
    "sparkSqlJob",
    "prestoJob",
    "trinoJob",
    "flinkJob",
];

const JOB: &[(&str, Field)] = &[
    (
        "reference",
        Msg(&[("projectId", Scalar), ("jobId", Scalar)]),
    ),
    (
        "placement",
        Msg(&[
            ("clusterName", Scalar),
            ("clusterUuid", Output),
            ("clusterLabels", M),
        ]),
    ),
    ("hadoopJob", Msg(JVM_JOB)),
    ("sparkJob", Msg(JVM_JOB)),
    ("pysparkJob", Msg(PYSPARK_JOB)),
    ("pigJob", Msg(PIG_JOB)),
    ("hiveJob", Any),
    ("sparkRJob", Any),
    ("sparkSqlJob", Any),
    ("prestoJob", Any),
    ("trinoJob", Any),
    ("flinkJob", Any),
    ("status", Output),
    ("statusHistory", Output),
    ("yarnApplications", Output),
    ("driverOutputResourceUri", Output),
    ("driverControlFilesUri", Output),
    ("labels", M),
    (
        "scheduling",
        Msg(&[("maxFailuresPerHour", Scalar), ("maxFailuresTotal", Scalar)]),
    ),
    ("jobUuid", Output),
    ("done", Output),
    (
        "driverSchedulingConfig",
        Msg(&[("memoryMb", Scalar), ("vcores", Scalar)]),
    ),
];

/// `SubmitJobRequest`'s body.
pub(super) const SUBMIT: &[(&str, Field)] = &[("job", Msg(JOB)), ("requestId", Scalar)];

const INSTANCE_GROUP: &[(&str, Field)] = &[
    ("numInstances", Scalar),
    ("instanceNames", Output),
    ("instanceReferences", Output),
    ("imageUri", Scalar),
    ("machineTypeUri", Scalar),
    (
        "diskConfig",
        Msg(&[
            ("bootDiskType", Scalar),
            ("bootDiskSizeGb", Scalar),
            ("numLocalSsds", Scalar),
            ("localSsdInterface", Scalar),
            ("bootDiskProvisionedIops", Scalar),
            ("bootDiskProvisionedThroughput", Scalar),
        ]),
    ),
    ("isPreemptible", Output),
    ("preemptibility", Scalar),
    ("managedGroupConfig", Output),
    ("accelerators", Any),
    ("minCpuPlatform", Scalar),
    ("minNumInstances", Scalar),
    ("instanceFlexibilityPolicy", Any),
    ("startupConfig", Any),
];

const CLUSTER_CONFIG: &[(&str, Field)] = &[
    ("configBucket", Scalar),
    ("tempBucket", Scalar),
    (
        "gceClusterConfig",
        Msg(&[
            ("zoneUri", Scalar),
            ("networkUri", Scalar),
            ("subnetworkUri", Scalar),
            ("internalIpOnly", Scalar),
            ("privateIpv6GoogleAccess", Scalar),
            ("serviceAccount", Scalar),
            ("serviceAccountScopes", List),
            ("tags", List),
            ("metadata", M),
            ("reservationAffinity", Any),
            ("nodeGroupAffinity", Any),
            ("shieldedInstanceConfig", Any),
            ("confidentialInstanceConfig", Any),
            ("resourceManagerTags", M),
        ]),
    ),
    ("masterConfig", Msg(INSTANCE_GROUP)),
    ("workerConfig", Msg(INSTANCE_GROUP)),
    ("secondaryWorkerConfig", Msg(INSTANCE_GROUP)),
    (
        "softwareConfig",
        Msg(&[
            ("imageVersion", Scalar),
            ("properties", M),
            ("optionalComponents", List),
        ]),
    ),
    (
        "initializationActions",
        Msgs(&[("executableFile", Scalar), ("executionTimeout", Scalar)]),
    ),
    ("encryptionConfig", Any),
    ("autoscalingConfig", Any),
    ("securityConfig", Any),
    (
        "lifecycleConfig",
        Msg(&[
            ("idleDeleteTtl", Scalar),
            ("autoDeleteTime", Scalar),
            ("autoDeleteTtl", Scalar),
            ("idleStartTime", Output),
        ]),
    ),
    ("endpointConfig", Any),
    ("metastoreConfig", Any),
    ("dataprocMetricConfig", Any),
    ("auxiliaryNodeGroups", Any),
];

/// The `Cluster` body of `clusters.create`.
pub(super) const CLUSTER: &[(&str, Field)] = &[
    ("projectId", Scalar),
    ("clusterName", Scalar),
    ("config", Msg(CLUSTER_CONFIG)),
    ("virtualClusterConfig", Any),
    ("labels", M),
    ("status", Output),
    ("statusHistory", Output),
    ("clusterUuid", Output),
    ("metrics", Output),
];

/// Query parameters every Google API takes (system parameters).
const SYSTEM_PARAMETERS: [&str; 8] = [
    "$.xgafv",
    "alt",
    "callback",
    "fields",
    "key",
    "prettyPrint",
    "quotaUser",
    "upload_protocol",
];

/// Checks `value` against `schema`; `at` is its path (`job.sparkJob`).
/// Removes output-only fields.
pub(super) fn fields(value: &mut Value, schema: &[(&str, Field)], at: &str) -> Result<(), String> {
    let Some(object) = value.as_object_mut() else {
        return Err(format!(
            "Invalid value at '{at}': a message (JSON object) is expected"
        ));
    };
    let mut outputs = Vec::new();
    for (name, field) in object.iter_mut() {
        let Some((_, kind)) = schema.iter().find(|(n, _)| n == name) else {
            let place = if at.is_empty() {
                String::new()
            } else {
                format!(" at '{at}'")
            };
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{name}\"{place}: Cannot find field."
            ));
        };
        let here = if at.is_empty() {
            name.clone()
        } else {
            format!("{at}.{name}")
        };
        match kind {
            Scalar if field.is_object() || field.is_array() => {
                return Err(format!(
                    "Invalid value at '{here}': a single value is expected"
                ))
            }
            List if !field.is_array()
                || field
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v.is_object() || v.is_array())) =>
            {
                return Err(format!(
                    "Invalid value at '{here}': a list of values is expected"
                ))
            }
            M if !field.is_object()
                || field
                    .as_object()
                    .is_some_and(|m| m.values().any(|v| !v.is_string())) =>
            {
                return Err(format!(
                    "Invalid value at '{here}': a map of strings is expected"
                ))
            }
            Msg(inner) => fields(field, inner, &here)?,
            Msgs(inner) => {
                let Some(items) = field.as_array_mut() else {
                    return Err(format!("Invalid value at '{here}': a list is expected"));
                };
                for (i, item) in items.iter_mut().enumerate() {
                    fields(item, inner, &format!("{here}[{i}]"))?;
                }
            }
            Output => outputs.push(name.clone()),
            _ => {}
        }
    }
    for name in outputs {
        object.remove(&name);
    }
    Ok(())
}

/// Refuses a query parameter the method does not take.
pub(super) fn query<'a>(
    params: impl IntoIterator<Item = &'a String>,
    allowed: &[&str],
) -> Result<(), String> {
    for name in params {
        if !allowed.contains(&name.as_str()) && !SYSTEM_PARAMETERS.contains(&name.as_str()) {
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{name}\": Cannot bind query parameter. Field '{name}' could not be found in request message."
            ));
        }
    }
    Ok(())
}

/// `requestId`: letters, digits, `_` and `-`, at most 40 characters.
pub(super) fn request_id(id: &str) -> Result<(), String> {
    if id.len() > 40
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "Invalid request_id '{id}': it must contain only letters (a-z, A-Z), numbers (0-9), underscores (_), and hyphens (-), and be at most 40 characters"
        ));
    }
    Ok(())
}

/// A job id: letters, digits, `_` and `-`, 1 to 100 characters.
pub(super) fn job_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 100
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "Invalid job_id '{id}': it must contain only letters (a-z, A-Z), numbers (0-9), underscores (_), or hyphens (-), and be 1 to 100 characters"
        ));
    }
    Ok(())
}

/// A cluster name: starts with a lowercase letter, up to 51 lowercase
/// letters, digits and hyphens, not ending with a hyphen.
pub(super) fn cluster_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 51
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(format!(
            "Invalid cluster name '{name}': it must start with a lowercase letter, contain up to 51 lowercase letters, numbers, and hyphens, and cannot end with a hyphen"
        ));
    }
    Ok(())
}

/// Labels: keys of 1 to 63 lowercase letters, digits, `_` and `-` starting
/// with a letter, values of 0 to 63 of the same; at most `max`; none of
/// the `goog-dataproc-` keys Dataproc sets itself.
pub(super) fn labels(labels: Option<&Map<String, Value>>, max: usize) -> Result<(), String> {
    let Some(labels) = labels else {
        return Ok(());
    };
    if labels.len() > max {
        return Err(format!("Too many labels: {} (at most {max})", labels.len()));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    for (key, value) in labels {
        let value = value.as_str().unwrap_or_default();
        if key.is_empty()
            || key.len() > 63
            || !key.starts_with(|c: char| c.is_ascii_lowercase())
            || !key.chars().all(allowed)
        {
            return Err(format!("Invalid label key '{key}': keys must start with a lowercase letter and contain 1 to 63 lowercase letters, numbers, underscores, or hyphens"));
        }
        if value.len() > 63 || !value.chars().all(allowed) {
            return Err(format!("Invalid label value '{value}' of key '{key}': values contain 0 to 63 lowercase letters, numbers, underscores, or hyphens"));
        }
        if key.starts_with("goog-dataproc") {
            return Err(format!("Label key '{key}' is reserved for Dataproc"));
        }
    }
    Ok(())
}

/// A protobuf `Duration` in JSON: seconds with an `s` (`600s`, `1.5s`).
pub(super) fn duration(value: &Value, at: &str) -> Result<f64, String> {
    value
        .as_str()
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s >= 0.0)
        .ok_or_else(|| {
            format!(
                "Invalid value at '{at}' (type.googleapis.com/google.protobuf.Duration), {value}"
            )
        })
}

/// The job's type, with its required fields: exactly one type, and for
/// it `mainPythonFileUri`, `mainJarFileUri` or `mainClass` (not both),
/// `queryFileUri` or `queryList` (not both); `placement.clusterName`.
pub(super) fn job(job: &Value) -> Result<&'static str, String> {
    let kinds: Vec<&str> = JOB_TYPES
        .iter()
        .chain(OTHER_JOB_TYPES.iter())
        .copied()
        .filter(|t| job.get(*t).is_some())
        .collect();
    let kind = match kinds.as_slice() {
        [kind] => *kind,
        [] => return Err(
            "Job must specify a job type (for example sparkJob, pysparkJob, hadoopJob or pigJob)"
                .into(),
        ),
        many => {
            return Err(format!(
                "Job must specify exactly one job type; found {}",
                many.join(", ")
            ))
        }
    };
    let Some(kind) = JOB_TYPES.iter().copied().find(|t| *t == kind) else {
        return Err(format!("the contract fake does not run {kind} jobs"));
    };
    let body = &job[kind];
    let set = |name: &str| body.get(name).is_some_and(|v| v.as_str() != Some(""));
    let oneof = |a: &str, b: &str| -> Result<(), String> {
        match (set(a), set(b)) {
            (true, true) => Err(format!("job.{kind}: only one of {a} and {b} may be set")),
            (false, false) => Err(format!("job.{kind}: one of {a} or {b} is required")),
            _ => Ok(()),
        }
    };
    match kind {
        "pysparkJob" if !set("mainPythonFileUri") => {
            return Err("job.pysparkJob.mainPythonFileUri is required".into())
        }
        "sparkJob" | "hadoopJob" => oneof("mainJarFileUri", "mainClass")?,
        "pigJob" => oneof("queryFileUri", "queryList")?,
        _ => {}
    }
    if job["placement"]["clusterName"]
        .as_str()
        .unwrap_or("")
        .is_empty()
    {
        return Err("job.placement.clusterName is required".into());
    }
    Ok(kind)
}

/// Which jobs a `jobs.list` filter asks for: `status.state = ACTIVE |
/// NON_ACTIVE` and `labels.KEY = VALUE|*` terms joined by `AND` (or a
/// space). `(state, [(key, value)])`.
pub(super) type ListFilter = (Option<String>, Vec<(String, String)>);

pub(super) fn list_filter(filter: &str) -> Result<ListFilter, String> {
    let bad = |why: &str| {
        format!("Invalid filter '{filter}': {why}. Filters are [field = value] AND [field [= value]] ... where field is status.state or labels.[KEY]")
    };
    let tokens: Vec<&str> = filter.split_whitespace().collect();
    let mut state = None;
    let mut labels = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "AND" {
            i += 1;
            continue;
        }
        let (field, value) = match tokens.get(i + 1) {
            Some(&"=") => {
                let value = tokens.get(i + 2).ok_or_else(|| bad("a value is missing"))?;
                i += 3;
                (tokens[i - 3], *value)
            }
            _ => {
                i += 1;
                (tokens[i - 1], "*")
            }
        };
        if field == "status.state" {
            if !matches!(value, "ACTIVE" | "NON_ACTIVE") {
                return Err(bad("status.state is ACTIVE or NON_ACTIVE"));
            }
            state = Some(value.to_string());
        } else if let Some(key) = field.strip_prefix("labels.").filter(|k| !k.is_empty()) {
            labels.push((key.to_string(), value.to_string()));
        } else {
            return Err(bad(&format!("unknown field {field}")));
        }
    }
    Ok((state, labels))
}
