//! What the settings and a flow file say about OpenLineage: the
//! `[lineage]` settings table ([`LineageSpec`]) and each step's `inputs`
//! and `outputs` ([`Dataset`], named as OpenLineage's dataset naming spec
//! says). Parsed and checked where the files are read (a wrong value is
//! refused at `file:line:col`); the events are built and posted by the
//! `flow-signals` crate.

use crate::notify::{Delivery, HttpUrl, NotifySecret};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// The job namespace when `[lineage]` names none.
pub const DEFAULT_NAMESPACE: &str = "flow";
/// The most events `[lineage] batch` may put in one request.
pub const MAX_BATCH: u32 = 10_000;
/// How long a batch waits for more events after its first, unless
/// `[lineage] linger` says otherwise.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(200);

/// `[lineage]`: where OpenLineage run events are posted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageSpec {
    /// The receiver's base URL: events are posted to
    /// `{url}/api/v1/lineage` (Marquez's endpoint).
    pub url: HttpUrl,
    /// The namespace of the jobs (`FLOW` and `FLOW.STEP`); default
    /// [`DEFAULT_NAMESPACE`].
    #[serde(default)]
    namespace: Option<String>,
    /// Sent as `Authorization: Bearer ...`; `"env:VAR"` (or the key itself).
    pub api_key: Option<NotifySecret>,
    /// Per attempt (default 10 s).
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    /// Attempts after the first (default 3).
    retries: Option<u32>,
    /// The first wait between attempts, doubled each time (default 1 s).
    #[serde(default, with = "humantime_serde")]
    retry_delay: Option<Duration>,
    /// The most events one request holds: set (and not 0), events go as
    /// JSON arrays to `{url}/api/v1/lineage/batch` (OpenLineage's
    /// `postEventBatch`, which Marquez lacks); unset, one event per request.
    #[serde(default)]
    batch: Option<Batch>,
    /// How long a batch waits for more events after its first (default
    /// [`DEFAULT_LINGER`]; 0: it takes only those already queued). Only
    /// with `batch`.
    #[serde(default, with = "humantime_serde")]
    linger: Option<Duration>,
}

/// `[lineage] batch`: 0 (one event per request) to [`MAX_BATCH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u32")]
struct Batch(u32);

impl TryFrom<u32> for Batch {
    type Error = String;
    fn try_from(events: u32) -> Result<Self, String> {
        if events > MAX_BATCH {
            return Err(format!(
                "batch = {events}: at most {MAX_BATCH} events per request (0: one event per request, no batches)"
            ));
        }
        Ok(Batch(events))
    }
}

impl LineageSpec {
    /// The jobs' namespace.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// The most events one request holds, when events are batched.
    pub fn batch(&self) -> Option<std::num::NonZeroUsize> {
        std::num::NonZeroUsize::new(self.batch.map_or(0, |b| b.0 as usize))
    }

    /// How long a batch waits for more events after its first.
    pub fn linger(&self) -> Duration {
        self.linger.unwrap_or(DEFAULT_LINGER)
    }

    /// How hard each event's delivery is tried.
    pub fn delivery(&self) -> Delivery {
        let default = Delivery::default();
        Delivery {
            timeout: self.timeout.unwrap_or(default.timeout),
            retries: self.retries.unwrap_or(default.retries),
            retry_delay: self.retry_delay.unwrap_or(default.retry_delay),
        }
    }

    /// What is wrong with a table that parsed (the loader adds the place).
    pub fn problem(&self) -> Option<String> {
        if self.delivery().timeout.is_zero() {
            return Some("[lineage] timeout must not be zero".into());
        }
        if let (Some(linger), None) = (self.linger, self.batch()) {
            return Some(format!(
                "[lineage] linger = {linger:?} holds events back for a batch, but no batch is set (set batch = N, or remove linger)"
            ));
        }
        match &self.namespace {
            Some(ns) if ns.trim().is_empty() || ns.chars().any(char::is_control) => Some(format!(
                "[lineage] namespace = {ns:?} is empty or holds a control character"
            )),
            _ => None,
        }
    }
}

/// A dataset a step reads or writes, from the URI the flow file gives,
/// named as OpenLineage's dataset naming spec says:
///
/// | written | namespace | name |
/// |---|---|---|
/// | `s3://BUCKET/KEY` | `s3://BUCKET` | `KEY` |
/// | `gs://BUCKET/KEY` | `gs://BUCKET` | `KEY` |
/// | `az://CONTAINER@ACCOUNT/KEY`, `wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/KEY` | `wasbs://CONTAINER@ACCOUNT.dfs.core.windows.net` | `KEY` |
/// | `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/KEY` | `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net` | `KEY` |
/// | `/ABSOLUTE/PATH`, `file:///ABSOLUTE/PATH` | `file` | `/ABSOLUTE/PATH` |
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Dataset {
    namespace: String,
    name: String,
}

impl Dataset {
    /// The dataset's namespace (where it lives).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Its name within the namespace.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.namespace, self.name)
    }
}

const WRITTEN: &str = "a dataset is s3://BUCKET/KEY, gs://BUCKET/KEY, az://CONTAINER@ACCOUNT/KEY, wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/KEY, abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/KEY or an absolute local path";

impl TryFrom<String> for Dataset {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let refused = |why: &str| format!("{text:?}: {why} ({WRITTEN})");
        if text.chars().any(char::is_control) {
            return Err(refused("holds a control character"));
        }
        let local = |path: &str| -> Result<Dataset, String> {
            if !path.starts_with('/') {
                return Err(refused("a local path must be absolute"));
            }
            Ok(Dataset {
                namespace: "file".into(),
                name: path.to_string(),
            })
        };
        let Some((scheme, rest)) = text.split_once("://") else {
            return local(&text);
        };
        if scheme == "file" {
            return match rest.strip_prefix('/') {
                Some(_) => local(rest),
                None => Err(refused("file:// names a host; write file:///PATH")),
            };
        }
        let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(refused("names no bucket or container"));
        }
        if key.is_empty() {
            return Err(refused("names no object key or prefix after the bucket"));
        }
        let azure = |service: &str| -> Result<(String, String), String> {
            match authority.split_once('@') {
                Some((container, host)) if !container.is_empty() && !host.is_empty() => {
                    let account = host.split('.').next().unwrap_or_default();
                    Ok((container.to_string(), account.to_string()))
                }
                _ => Err(refused(&format!(
                    "an Azure dataset names its container and account: {scheme}://CONTAINER@ACCOUNT{service}/KEY"
                ))),
            }
        };
        let namespace = match scheme {
            "s3" | "gs" => format!("{scheme}://{authority}"),
            "az" | "wasbs" => {
                let suffix = if scheme == "az" {
                    ""
                } else {
                    ".blob.core.windows.net"
                };
                let (container, account) = azure(suffix)?;
                format!("wasbs://{container}@{account}.dfs.core.windows.net")
            }
            "abfss" => {
                let (container, account) = azure(".dfs.core.windows.net")?;
                format!("abfss://{container}@{account}.dfs.core.windows.net")
            }
            _ => return Err(refused(&format!("unknown scheme {scheme}://"))),
        };
        Ok(Dataset {
            namespace,
            name: key.to_string(),
        })
    }
}

/// The datasets one step declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepDatasets {
    /// `inputs = [...]`: what it reads.
    pub inputs: Vec<Dataset>,
    /// `outputs = [...]`: what it writes.
    pub outputs: Vec<Dataset>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(uri: &str) -> (String, String) {
        let d = Dataset::try_from(uri.to_string()).unwrap();
        (d.namespace().to_string(), d.name().to_string())
    }

    #[test]
    fn uris_are_named_as_the_openlineage_naming_spec_says() {
        let pair = |ns: &str, name: &str| (ns.to_string(), name.to_string());
        assert_eq!(
            named("s3://raw/events/2026/"),
            pair("s3://raw", "events/2026/")
        );
        assert_eq!(named("gs://b/k.csv"), pair("gs://b", "k.csv"));
        assert_eq!(
            named("az://data@acct/in/x"),
            pair("wasbs://data@acct.dfs.core.windows.net", "in/x")
        );
        assert_eq!(
            named("wasbs://data@acct.blob.core.windows.net/in/x"),
            pair("wasbs://data@acct.dfs.core.windows.net", "in/x")
        );
        assert_eq!(
            named("abfss://data@acct.dfs.core.windows.net/in/x"),
            pair("abfss://data@acct.dfs.core.windows.net", "in/x")
        );
        assert_eq!(named("/srv/data/x"), pair("file", "/srv/data/x"));
        assert_eq!(named("file:///srv/data/x"), pair("file", "/srv/data/x"));
        for (bad, says) in [
            ("ftp://h/x", "unknown scheme ftp://"),
            ("relative/x", "must be absolute"),
            ("s3://bucket", "names no object key"),
            ("s3:///key", "names no bucket"),
            ("az://data/in/x", "CONTAINER@ACCOUNT"),
            ("file://host/x", "names a host"),
        ] {
            let e = Dataset::try_from(bad.to_string()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_settings_table_is_strict() {
        #[derive(Debug, Deserialize)]
        struct File {
            lineage: LineageSpec,
        }
        let f: File = toml::from_str(
            "[lineage]\nurl = \"http://127.0.0.1:5000\"\napi_key = \"env:OL_KEY\"\nretries = 1\n",
        )
        .unwrap();
        assert_eq!(f.lineage.namespace(), DEFAULT_NAMESPACE);
        assert_eq!(f.lineage.delivery().retries, 1);
        assert!(f.lineage.problem().is_none());
        let e = toml::from_str::<File>("[lineage]\nurl = \"http://h\"\nnamespce = \"x\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("namespce"), "{e}");
        let e = toml::from_str::<File>("[lineage]\nurl = \"h:5000\"\n").unwrap_err();
        assert!(e.to_string().contains("not an http"), "{e}");
        let f: File = toml::from_str("[lineage]\nurl = \"http://h\"\nnamespace = \" \"\n").unwrap();
        assert!(f.lineage.problem().unwrap().contains("namespace"));
        assert_eq!(f.lineage.batch(), None, "one event per request unless set");
        let batch = |text: &str| {
            toml::from_str::<File>(&format!("[lineage]\nurl = \"http://h\"\n{text}\n"))
        };
        assert_eq!(
            batch("batch = 100")
                .unwrap()
                .lineage
                .batch()
                .map(|n| n.get()),
            Some(100)
        );
        assert_eq!(batch("batch = 0").unwrap().lineage.batch(), None);
        for (bad, says) in [
            ("batch = -1", "invalid value"),
            ("batch = \"100\"", "expected u32"),
            ("batch = 10001", "at most 10000 events per request"),
        ] {
            let e = batch(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let linger = |text: &str| batch(text).unwrap().lineage;
        assert_eq!(linger("batch = 100").linger(), DEFAULT_LINGER);
        let set = linger("batch = 100\nlinger = \"1s\"");
        assert_eq!(
            (set.linger(), set.problem()),
            (Duration::from_secs(1), None)
        );
        assert_eq!(
            linger("batch = 100\nlinger = \"0s\"").linger(),
            Duration::ZERO
        );
        for alone in ["linger = \"1s\"", "batch = 0\nlinger = \"1s\""] {
            let problem = linger(alone).problem().unwrap();
            assert!(problem.contains("no batch is set"), "{alone}: {problem}");
        }
        let e = batch("batch = 100\nlinger = 5").unwrap_err().to_string();
        assert!(e.contains("linger"), "{e}");
    }
}
