//! What every REST cloud's job handle and job payload share, written once:
//! reading a durable [`JobHandle`]'s ids (a wrong kind, a missing or empty
//! id is [`ClusterError::BadHandle`] naming the run's cluster), the job's
//! type recorded in it, a unique client-chosen job name, and where a job
//! file written without a scheme is. Which ids a handle holds, how long a
//! name may be and which scheme a bucket has stay in each cloud's crate.

use flow_core::{normalize_key, ClusterError, JobHandle};

/// A job handle's ids, read for one cloud's kind.
#[derive(Debug, Clone, Copy)]
pub struct HandleIds<'a> {
    handle: &'a JobHandle,
    cluster: &'a str,
}

impl<'a> HandleIds<'a> {
    /// `handle`'s ids if it is a `kind` handle; `cluster` names the run's
    /// cluster in errors.
    pub fn read(handle: &'a JobHandle, kind: &str, cluster: &'a str) -> Result<Self, ClusterError> {
        let ids = HandleIds { handle, cluster };
        if handle.kind != kind {
            return Err(ids.bad(format!("a {} handle, not a {kind} one", handle.kind)));
        }
        Ok(ids)
    }

    /// A [`ClusterError::BadHandle`] about this handle.
    pub fn bad(&self, message: String) -> ClusterError {
        ClusterError::BadHandle {
            cluster: self.cluster.to_string(),
            handle: self.handle.to_string(),
            message,
        }
    }

    /// The id `name`; missing or empty, a bad handle (`no NAME`).
    pub fn required(&self, name: &str) -> Result<String, ClusterError> {
        self.optional(name)
            .map(str::to_string)
            .ok_or_else(|| self.bad(format!("no {name}")))
    }

    /// The id `name`, unless it is missing or empty (not known yet).
    pub fn optional(&self, name: &str) -> Option<&'a str> {
        self.handle.id(name).filter(|v| !v.is_empty())
    }
}

/// The job's type recorded in `handle` under `key`, for messages: one of
/// `kinds`, else the first of them.
pub fn job_type(handle: &JobHandle, key: &str, kinds: &[&'static str]) -> &'static str {
    let recorded = handle.id(key);
    kinds
        .iter()
        .copied()
        .find(|k| recorded == Some(*k))
        .or_else(|| kinds.first().copied())
        .unwrap_or("")
}

/// `text` with every character but ASCII letters, digits, `_` and `-`
/// turned into `-` (what job names, ids, labels and tags allow).
pub fn safe_chars(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A name unique per attempt: `text` in [`safe_chars`], cut so that with
/// `-RANDOM` it has at most `max` characters.
pub fn unique_name(text: &str, random: &str, max: usize) -> String {
    let mut name = safe_chars(text);
    name.truncate(max.saturating_sub(random.len() + 1));
    format!("{name}-{random}")
}

/// Where a job file is: as written when it has a scheme (`gs://`, `s3://`,
/// `wasbs://`, ...), else `ROOT/KEY` with the path normalised as a key;
/// without a root, the message `missing` gives.
pub fn job_file(
    path: &str,
    root: Option<&str>,
    missing: impl FnOnce() -> String,
) -> Result<String, String> {
    if path.contains("://") {
        return Ok(path.to_string());
    }
    let Some(root) = root else {
        return Err(missing());
    };
    let key = normalize_key("resolve", path).map_err(|e| e.to_string())?;
    Ok(format!("{root}/{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_of_another_kind_or_without_an_id_is_bad() {
        let handle = JobHandle::new("qubole", "q-0", [("name", "n"), ("id", "")]);
        let ids = HandleIds::read(&handle, "qubole", "q-0").unwrap();
        assert_eq!(ids.required("name").unwrap(), "n");
        assert_eq!(ids.optional("id"), None);
        let e = ids.required("id").unwrap_err().to_string();
        assert!(e.contains("no id"), "{e}");
        let e = HandleIds::read(&handle, "azure", "q-0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a qubole handle, not a azure one"), "{e}");
    }

    #[test]
    fn types_names_and_files() {
        let handle = JobHandle::new("x", "x-0", [("type", "pig")]);
        assert_eq!(job_type(&handle, "type", &["spark", "pig"]), "pig");
        assert_eq!(job_type(&handle, "kind", &["spark", "pig"]), "spark");
        assert_eq!(unique_name("a b/c", "0f", 6), "a-b-0f");
        assert_eq!(
            job_file("/jobs//x.py", Some("s3://b"), String::new).unwrap(),
            "s3://b/jobs/x.py"
        );
        assert_eq!(job_file("gs://o/x", None, String::new).unwrap(), "gs://o/x");
        assert_eq!(job_file("x", None, || "none".into()).unwrap_err(), "none");
        assert!(job_file("../x", Some("s3://b"), String::new).is_err());
    }
}
