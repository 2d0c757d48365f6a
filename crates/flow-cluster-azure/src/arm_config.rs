//! [`ArmConfig`]: the `[cluster.azure.arm]` settings, with which launch
//! creates the run's HDInsight clusters through Azure Resource Manager and
//! deletes them at the end.

use flow_fs_azure::{SecretRef, PLAIN_TEXT_SECRET};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// ARM's public endpoint.
pub const ARM_ENDPOINT: &str = "https://management.azure.com";
/// Microsoft Entra ID's public authority.
pub const ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The `Microsoft.HDInsight` REST api-version used by default.
pub const API_VERSION: &str = "2021-06-01";
/// Where a created cluster's gateway is: `{name}` is its ARM name.
pub const GATEWAY_TEMPLATE: &str = "https://{name}.azurehdinsight.net";

/// Settings of the clusters flow creates through ARM. Holds where secrets
/// are read from (`"env:VAR"`), never a secret.
///
/// ```toml
/// [cluster.azure.arm]
/// subscription = "00000000-0000-0000-0000-000000000000"
/// resource_group = "flows"
/// location = "westeurope"
/// credential = { kind = "client_secret", tenant = "contoso.onmicrosoft.com", client_id = "app-id", secret = "env:AZURE_CLIENT_SECRET" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    /// The subscription id the clusters are made in.
    pub subscription: String,
    /// Their resource group.
    pub resource_group: String,
    /// Their Azure region (the create body's `location`).
    pub location: String,
    /// The clusters' base name: the run's clusters are `NAME-0..N-1`.
    /// Default `flow-FLOW-TIMEPERIOD` (shortened with a hash when long).
    #[serde(default)]
    pub name: Option<String>,
    /// The create body's `properties` as ARM spells them (`clusterVersion`,
    /// `osType`, `tier`, `clusterDefinition.kind`, `computeProfile.roles`,
    /// `storageProfile.storageaccounts`, ...). The gateway's login is added
    /// from `[cluster.azure]` `username` and `password`.
    pub definition: Definition,
    /// Tags on each cluster (flow adds `flow-run-key`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// How flow gets ARM's tokens.
    pub credential: ArmCredential,
    /// ARM's endpoint (a contract fake's URL in tests).
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// The `Microsoft.HDInsight` api-version.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// A created cluster's gateway, `{name}` replaced by its ARM name.
    #[serde(default = "default_gateway")]
    pub gateway: String,
    /// The time between two looks at a create or delete operation (a
    /// longer `Retry-After` from ARM is honoured).
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub launch_poll: Duration,
    /// The longest wait for a cluster to be created.
    #[serde(default = "default_launch_timeout", with = "humantime_serde")]
    pub launch_timeout: Duration,
    /// The longest wait for a cluster to be deleted.
    #[serde(default = "default_terminate_timeout", with = "humantime_serde")]
    pub terminate_timeout: Duration,
}

fn default_endpoint() -> String {
    ARM_ENDPOINT.into()
}
fn default_api_version() -> String {
    API_VERSION.into()
}
fn default_gateway() -> String {
    GATEWAY_TEMPLATE.into()
}
fn default_poll() -> Duration {
    Duration::from_secs(30)
}
fn default_launch_timeout() -> Duration {
    Duration::from_secs(60 * 60)
}
fn default_terminate_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

/// How flow authenticates to ARM (through `azure_identity`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArmCredential {
    /// An application (service principal) with a client secret.
    ClientSecret {
        /// The Entra ID tenant (id or domain).
        tenant: String,
        /// The application (client) id.
        client_id: String,
        /// Its client secret (`"env:VAR"`).
        secret: SecretRef,
        /// The Entra ID authority (a contract fake's URL in tests).
        #[serde(default = "default_authority")]
        authority: String,
    },
    /// The machine's managed identity (Azure's instance metadata service).
    ManagedIdentity,
    /// The signed-in Azure CLI (`az account get-access-token`).
    AzureCli,
}

fn default_authority() -> String {
    ENTRA_AUTHORITY.into()
}

/// What a plain-text secret of the definition is replaced by as it is read.
const REFUSED: &str = "<plain text, refused>";

/// The create body's `properties`, as the user wrote them. A secret in it
/// (a member named like `password`, or `key`, such as a storage
/// account's) must be `"env:VAR"`, read when the cluster is created; one
/// written in plain text is dropped as it is read and refused by
/// [`ArmConfig::validate`] naming its place only.
#[derive(Clone, PartialEq, Serialize)]
pub struct Definition(pub Value);

impl fmt::Debug for Definition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whether a member's value is a secret.
fn is_secret(member: &str) -> bool {
    let m = member.to_ascii_lowercase();
    m.contains("password") || m == "key" || m.ends_with("secret")
}

impl<'de> Deserialize<'de> for Definition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fn scrub(value: &mut Value) {
            match value {
                Value::Object(members) => {
                    for (member, v) in members.iter_mut() {
                        match v {
                            Value::String(s) if is_secret(member) && !s.starts_with("env:") => {
                                *s = REFUSED.into()
                            }
                            other => scrub(other),
                        }
                    }
                }
                Value::Array(items) => items.iter_mut().for_each(scrub),
                _ => {}
            }
        }
        let mut value = Value::deserialize(d)?;
        scrub(&mut value);
        Ok(Definition(value))
    }
}

impl Definition {
    /// The definition with each `"env:VAR"` secret replaced by the
    /// variable's value (registered for masking); `Err((place, why))` when
    /// one is not set.
    pub(crate) fn resolve(&self) -> Result<Value, (String, String)> {
        fn walk(value: &mut Value, at: &str) -> Result<(), (String, String)> {
            match value {
                Value::Object(members) => {
                    for (member, v) in members.iter_mut() {
                        let place = format!("{at}.{member}");
                        match v {
                            Value::String(s) if is_secret(member) => {
                                let var = s.strip_prefix("env:").unwrap_or_default().to_string();
                                match std::env::var(&var) {
                                    Ok(secret) if !secret.is_empty() => {
                                        *s = flow_core::Secret::new(secret).expose().to_string()
                                    }
                                    _ => {
                                        return Err((
                                            place,
                                            format!("reads the environment variable {var}, which is not set or empty"),
                                        ))
                                    }
                                }
                            }
                            other => walk(other, &place)?,
                        }
                    }
                }
                Value::Array(items) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        walk(item, &format!("{at}[{i}]"))?;
                    }
                }
                _ => {}
            }
            Ok(())
        }
        let mut value = self.0.clone();
        walk(&mut value, "definition")?;
        Ok(value)
    }
}

impl ArmConfig {
    /// Checks the values; `Err((setting, why))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, why: &str| Err((field.to_string(), why.to_string()));
        for (field, value) in [
            ("subscription", &self.subscription),
            ("resource_group", &self.resource_group),
            ("location", &self.location),
            ("api_version", &self.api_version),
        ] {
            if value.trim().is_empty() {
                return bad(field, "must not be empty");
            }
        }
        for (field, value) in [("endpoint", &self.endpoint), ("gateway", &self.gateway)] {
            if !(value.starts_with("https://") || value.starts_with("http://")) {
                return bad(field, "must be an http:// or https:// URL");
            }
        }
        if let Some(name) = &self.name {
            if !valid_name(name) {
                return bad(
                    "name",
                    "an HDInsight cluster name has 3 to 45 letters, digits and hyphens, and starts with a letter",
                );
            }
        }
        for (field, value) in [
            ("launch_poll", self.launch_poll),
            ("launch_timeout", self.launch_timeout),
            ("terminate_timeout", self.terminate_timeout),
        ] {
            if value.is_zero() {
                return bad(field, "must not be zero");
            }
        }
        if let ArmCredential::ClientSecret {
            tenant,
            client_id,
            secret,
            authority,
        } = &self.credential
        {
            if tenant.trim().is_empty() || client_id.trim().is_empty() {
                return bad("credential", "client_secret needs tenant and client_id");
            }
            if secret.variable().is_none() {
                return bad("credential.secret", PLAIN_TEXT_SECRET);
            }
            if !(authority.starts_with("https://") || authority.starts_with("http://")) {
                return bad("credential.authority", "must be an http:// or https:// URL");
            }
        }
        self.validate_definition()
    }

    /// The required parts of the create body's `properties`.
    fn validate_definition(&self) -> Result<(), (String, String)> {
        let d = &self.definition.0;
        let bad = |field: String, why: &str| Err((field, why.to_string()));
        if !d.is_object() {
            return bad(
                "definition".into(),
                "must be a table (the create body's properties)",
            );
        }
        if let Some(place) = find_refused(d, "definition") {
            return bad(place, PLAIN_TEXT_SECRET);
        }
        let text = |v: &Value| v.as_str().is_some_and(|s| !s.trim().is_empty());
        for (place, value) in [
            ("definition.clusterVersion", &d["clusterVersion"]),
            ("definition.osType", &d["osType"]),
            (
                "definition.clusterDefinition.kind",
                &d["clusterDefinition"]["kind"],
            ),
        ] {
            if !text(value) {
                return bad(place.into(), "required");
            }
        }
        let Some(roles) = d["computeProfile"]["roles"]
            .as_array()
            .filter(|r| !r.is_empty())
        else {
            return bad(
                "definition.computeProfile.roles".into(),
                "required: the cluster's roles (headnode, workernode, ...) with their VM sizes and counts",
            );
        };
        for (i, role) in roles.iter().enumerate() {
            let at = format!("definition.computeProfile.roles[{i}]");
            if !text(&role["name"]) {
                return bad(format!("{at}.name"), "required");
            }
            if role["targetInstanceCount"].as_u64().unwrap_or(0) == 0 {
                return bad(
                    format!("{at}.targetInstanceCount"),
                    "required: a count of at least 1",
                );
            }
            if !text(&role["hardwareProfile"]["vmSize"]) {
                return bad(format!("{at}.hardwareProfile.vmSize"), "required");
            }
        }
        if d["storageProfile"]["storageaccounts"]
            .as_array()
            .is_none_or(|a| a.is_empty())
        {
            return bad(
                "definition.storageProfile.storageaccounts".into(),
                "required: the cluster's default storage account",
            );
        }
        if d["clusterDefinition"]["configurations"]["gateway"].is_object() {
            return bad(
                "definition.clusterDefinition.configurations.gateway".into(),
                "is set by flow from [cluster.azure] username and password: leave it out",
            );
        }
        Ok(())
    }

    /// The environment variables its secrets are read from (the client
    /// secret, the definition's `"env:VAR"`s), to keep out of local jobs'
    /// environment.
    pub fn secret_variables(&self) -> Vec<&str> {
        fn walk<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
            match value {
                Value::Object(members) => {
                    for (member, v) in members {
                        match v {
                            Value::String(s) if is_secret(member) => {
                                out.extend(s.strip_prefix("env:"))
                            }
                            other => walk(other, out),
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        if let ArmCredential::ClientSecret { secret, .. } = &self.credential {
            out.extend(secret.variable());
        }
        walk(&self.definition.0, &mut out);
        out
    }

    /// The gateway of the cluster called `name`.
    pub fn gateway_of(&self, name: &str) -> String {
        self.gateway
            .replace("{name}", name)
            .trim_end_matches('/')
            .to_string()
    }
}

/// The place of the first secret written in plain text.
fn find_refused(value: &Value, at: &str) -> Option<String> {
    match value {
        Value::String(s) if s == REFUSED => Some(at.to_string()),
        Value::Object(members) => members
            .iter()
            .find_map(|(m, v)| find_refused(v, &format!("{at}.{m}"))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_refused(v, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// HDInsight's rule for a cluster name, keeping room for `-N`.
fn valid_name(name: &str) -> bool {
    (3..=45).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.ends_with('-')
}

/// `text` as an HDInsight cluster name part: lower-case letters, digits
/// and single hyphens.
pub(crate) fn name_text(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
subscription = "sub"
resource_group = "rg"
location = "westeurope"
credential = { kind = "azure_cli" }
[definition]
clusterVersion = "5.1"
osType = "Linux"
clusterDefinition = { kind = "spark" }
computeProfile = { roles = [{ name = "headnode", targetInstanceCount = 2, hardwareProfile = { vmSize = "Standard_E8_V3" } }] }
storageProfile = { storageaccounts = [{ name = "a.blob.core.windows.net", key = "env:K" }] }
"#;

    fn checked(text: &str) -> Result<ArmConfig, (String, String)> {
        let config: ArmConfig =
            toml::from_str(text).map_err(|e| ("parse".into(), e.to_string()))?;
        config.validate().map(|()| config)
    }

    #[test]
    fn a_whole_definition_passes_and_names_the_gateway() {
        let c = checked(GOOD).unwrap();
        assert_eq!(c.gateway_of("etl-0"), "https://etl-0.azurehdinsight.net");
        assert_eq!(c.api_version, API_VERSION);
    }

    #[test]
    fn each_missing_part_of_the_definition_is_named() {
        for (cut, place) in [
            ("clusterVersion = \"5.1\"\n", "definition.clusterVersion"),
            ("osType = \"Linux\"\n", "definition.osType"),
            (
                "clusterDefinition = { kind = \"spark\" }\n",
                "definition.clusterDefinition.kind",
            ),
            (
                "targetInstanceCount = 2, ",
                "definition.computeProfile.roles[0].targetInstanceCount",
            ),
            (
                "hardwareProfile = { vmSize = \"Standard_E8_V3\" } ",
                "definition.computeProfile.roles[0].hardwareProfile.vmSize",
            ),
        ] {
            assert!(GOOD.contains(cut), "{cut}");
            let (field, _) = checked(&GOOD.replace(cut, "")).unwrap_err();
            assert_eq!(field, place);
        }
        let no_storage = GOOD.replace(
            "storageProfile = { storageaccounts = [{ name = \"a.blob.core.windows.net\", key = \"env:K\" }] }\n",
            "",
        );
        assert_eq!(
            checked(&no_storage).unwrap_err().0,
            "definition.storageProfile.storageaccounts"
        );
    }

    #[test]
    fn a_secret_of_the_definition_in_plain_text_is_refused_and_never_kept() {
        let text = GOOD.replace("key = \"env:K\"", "key = \"hunter2-storage-key\"");
        let config: ArmConfig = toml::from_str(&text).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        let (field, why) = config.validate().unwrap_err();
        assert_eq!(field, "definition.storageProfile.storageaccounts[0].key");
        assert!(why.contains("env:VAR") && !why.contains("hunter2"), "{why}");
        let secret = GOOD.replace(
            "credential = { kind = \"azure_cli\" }",
            "credential = { kind = \"client_secret\", tenant = \"t\", client_id = \"c\", secret = \"hunter2-client\" }",
        );
        let (field, _) = checked(&secret).unwrap_err();
        assert_eq!(field, "credential.secret");
    }

    #[test]
    fn names_fit_hdinsight() {
        assert_eq!(
            name_text("Daily_Report-2026112800"),
            "daily-report-2026112800"
        );
        assert!(valid_name("etl-nightly"));
        assert!(!valid_name("9etl"));
        assert!(!valid_name("etl_nightly"));
    }
}
