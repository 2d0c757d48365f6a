//! A created cluster as Dataproc stores and returns it: the request with
//! the service's defaults filled and its short names expanded (zone and
//! machine type URIs, instance names, the resolved image version, config
//! and temp buckets, disk and scope defaults), checked where Dataproc
//! checks (1 or 3 masters, 0 or at least 2 workers, the zero-worker
//! property, `gs://` initialization actions, idle TTL bounds).

use super::validate;
use super::Service;
use serde_json::{json, Value};

const COMPUTE: &str = "https://www.googleapis.com/compute/v1";
/// The image version an unset or `2.2`-style `imageVersion` resolves to.
const IMAGE_PATCH: &str = "2.2.41";
const DEFAULT_MACHINE: &str = "n2-standard-4";

/// The stored `Cluster`, or why Dataproc refuses the request.
pub(super) fn as_created(
    shared: &Service,
    project: &str,
    region: &str,
    name: &str,
    mut cluster: Value,
) -> Result<Value, String> {
    if cluster.get("config").is_none() {
        cluster["config"] = json!({});
    }
    let config = &mut cluster["config"];
    if config.get("configBucket").is_none() {
        config["configBucket"] = json!(shared.options.staging_bucket);
    }
    if config.get("tempBucket").is_none() {
        config["tempBucket"] = json!(format!("dataproc-temp-{region}-fake"));
    }
    // The zone: Auto Zone placement picks one in the region.
    let gce = config
        .as_object_mut()
        .expect("config is an object")
        .entry("gceClusterConfig")
        .or_insert_with(|| json!({}));
    let zone = match gce["zoneUri"].as_str() {
        None | Some("") => format!("{region}-b"),
        Some(uri) => uri.rsplit('/').next().unwrap_or(uri).to_string(),
    };
    if !zone.starts_with(region) {
        return Err(format!(
            "Invalid zone '{zone}': it is not in region '{region}'"
        ));
    }
    gce["zoneUri"] = json!(format!("{COMPUTE}/projects/{project}/zones/{zone}"));
    if gce.get("subnetworkUri").is_none() && gce.get("networkUri").is_none() {
        gce["networkUri"] = json!(format!(
            "{COMPUTE}/projects/{project}/global/networks/default"
        ));
    }
    if gce.get("serviceAccountScopes").is_none() {
        gce["serviceAccountScopes"] = json!(["https://www.googleapis.com/auth/cloud-platform"]);
    }
    // The software: the image version resolved to a patch version.
    let software = config
        .as_object_mut()
        .expect("config is an object")
        .entry("softwareConfig")
        .or_insert_with(|| json!({}));
    let requested = software["imageVersion"].as_str().unwrap_or("2.2-debian12");
    let (line, os) = requested.split_once('-').unwrap_or((requested, "debian12"));
    let resolved = if line.matches('.').count() >= 2 {
        requested.to_string()
    } else {
        format!(
            "{}.{}-{os}",
            line,
            IMAGE_PATCH.rsplit('.').next().unwrap_or("0")
        )
    };
    software["imageVersion"] = json!(resolved);
    let zero_workers_allowed =
        software["properties"]["dataproc:dataproc.allow.zero.workers"].as_str() == Some("true");
    let image = format!(
        "{COMPUTE}/projects/cloud-dataproc/global/images/dataproc-{}-fake",
        resolved.replace('.', "-")
    );
    let group = |group: &mut Value, role: &str, default_count: u64| -> Result<u64, String> {
        if group.is_null() {
            *group = json!({});
        }
        let count = match &group["numInstances"] {
            Value::Null => default_count,
            v => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| {
                    format!("Invalid value at 'cluster.config.{role}Config.numInstances', {v}")
                })?,
        };
        let short = |kind: &str| {
            if role == "master" {
                format!("{name}-m{kind}")
            } else {
                format!("{name}-w{kind}")
            }
        };
        let names: Vec<String> = match (role, count) {
            ("master", 1) => vec![short("")],
            _ => (0..count).map(|i| short(&format!("-{i}"))).collect(),
        };
        let machine = group["machineTypeUri"].as_str().unwrap_or(DEFAULT_MACHINE);
        let machine = machine.rsplit('/').next().unwrap_or(machine).to_string();
        group["numInstances"] = json!(count);
        group["instanceNames"] = json!(names);
        group["machineTypeUri"] = json!(format!(
            "{COMPUTE}/projects/{project}/zones/{zone}/machineTypes/{machine}"
        ));
        if group.get("imageUri").is_none() {
            group["imageUri"] = json!(image);
        }
        let disk = group
            .as_object_mut()
            .expect("an instance group is an object")
            .entry("diskConfig")
            .or_insert_with(|| json!({}));
        if disk.get("bootDiskSizeGb").is_none() {
            disk["bootDiskSizeGb"] = json!(1000);
        }
        if disk.get("bootDiskType").is_none() {
            disk["bootDiskType"] = json!("pd-standard");
        }
        if group.get("minCpuPlatform").is_none() {
            group["minCpuPlatform"] = json!("AUTOMATIC");
        }
        if group.get("preemptibility").is_none() {
            group["preemptibility"] = json!("NON_PREEMPTIBLE");
        }
        Ok(count)
    };
    let masters = group(&mut config["masterConfig"], "master", 1)?;
    if masters != 1 && masters != 3 {
        return Err(format!(
            "Invalid value for masterConfig.numInstances: {masters}; a cluster has 1 master, or 3 for high availability"
        ));
    }
    let worker_default = if zero_workers_allowed { 0 } else { 2 };
    let workers = if config.get("workerConfig").is_none() && zero_workers_allowed {
        0
    } else {
        group(&mut config["workerConfig"], "worker", worker_default)?
    };
    match workers {
        0 if !zero_workers_allowed => return Err(
            "Multi-node clusters must have at least 2 worker nodes; a single-node cluster needs the property dataproc:dataproc.allow.zero.workers=true".into(),
        ),
        1 => return Err("Multi-node clusters must have at least 2 worker nodes".into()),
        _ => {}
    }
    if let Some(actions) = config["initializationActions"].as_array_mut() {
        for (i, action) in actions.iter_mut().enumerate() {
            let file = action["executableFile"].as_str().unwrap_or("");
            if !file.starts_with("gs://") {
                return Err(format!(
                    "Invalid value at 'cluster.config.initializationActions[{i}].executableFile': '{file}' is not a Cloud Storage URI (gs://...)"
                ));
            }
            match action.get("executionTimeout") {
                None => action["executionTimeout"] = json!("600s"),
                Some(t) => {
                    validate::duration(
                        t,
                        &format!("cluster.config.initializationActions[{i}].executionTimeout"),
                    )?;
                }
            }
        }
    }
    if let Some(ttl) = config["lifecycleConfig"].get("idleDeleteTtl") {
        let seconds = validate::duration(ttl, "cluster.config.lifecycleConfig.idleDeleteTtl")?;
        if !(600.0..=14.0 * 86400.0).contains(&seconds) {
            return Err(format!(
                "Invalid lifecycleConfig.idleDeleteTtl {ttl}: it must be between 10 minutes and 14 days"
            ));
        }
    }
    Ok(cluster)
}
