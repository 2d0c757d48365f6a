//! WebHCat (Templeton) v1, HDInsight's gateway for Pig and MapReduce jobs at
//! `/templeton/v1`: the calls and bodies the cluster uses. Every call
//! carries `user.name`. A job's `statusdir` is chosen by the client, unique
//! per flow job, and WebHCat echoes it in `userargs`: it is the job's
//! identity when a submit answer is lost.

use crate::gateway::{read_json, CallError, Gateway};
use serde::Deserialize;

/// WebHCat's requests in [`flow_core::meter`].
const BACKEND: &str = "webhcat";

/// A job as `GET /jobs/ID` (and `GET /jobs?fields=*`'s `detail`) shows it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebHcatJob {
    /// Hadoop's job id (`job_1700000000000_0001`).
    pub id: String,
    /// The job's status.
    pub status: JobState,
    /// The controller's exit value (Pig's exit code), once it ended.
    #[serde(default)]
    pub exit_value: Option<i64>,
    /// `"done"` once the job ended and its exit value is known.
    #[serde(default)]
    pub completed: Option<String>,
    /// The arguments it was submitted with (`statusdir`, `user.name`, ...).
    #[serde(default)]
    pub userargs: serde_json::Map<String, serde_json::Value>,
}

/// `status` of a WebHCat job.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobState {
    /// `PREP`, `RUNNING`, `SUCCEEDED`, `FAILED` or `KILLED`.
    pub state: String,
    /// Why it failed, when Hadoop says.
    #[serde(default)]
    pub failure_info: Option<String>,
}

impl WebHcatJob {
    /// The `statusdir` it was submitted with.
    pub fn statusdir(&self) -> Option<&str> {
        self.userargs.get("statusdir").and_then(|v| v.as_str())
    }
}

#[derive(Debug, Deserialize)]
struct Submitted {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Listed {
    #[serde(default)]
    detail: Option<WebHcatJob>,
}

/// WebHCat's answer for a job it does not know: 400 `Could not find job
/// ID` (its `StatusDelegator` throws `BadParam`; it has no 404 for jobs).
fn unknown_job(e: &CallError) -> bool {
    e.is_status(400) && e.to_string().contains("Could not find job")
}

/// The id just before `id` as WebHCat sorts them (`job_START_0042` →
/// `job_START_0041`), so a listing after it starts at `id`; `None` for the
/// first job of a cluster start or an id of another shape.
pub(crate) fn id_before(id: &str) -> Option<String> {
    let (head, seq) = id.rsplit_once('_')?;
    let n: u64 = seq.parse().ok()?;
    let before = n.checked_sub(1).filter(|b| *b > 0)?;
    Some(format!("{head}_{before:0width$}", width = seq.len()))
}

/// A job to submit: `pig` (`file`) or `mapreduce/jar` (`jar`, `class`).
pub(crate) enum Submit<'a> {
    Pig {
        file: &'a str,
        args: Vec<String>,
    },
    Jar {
        jar: &'a str,
        class: Option<&'a str>,
        args: &'a [String],
    },
}

/// WebHCat at `url` (`https://CLUSTER.azurehdinsight.net/templeton/v1`) as
/// `user`.
pub(crate) struct WebHcat<'a> {
    pub gateway: &'a Gateway,
    pub url: &'a str,
    pub user: &'a str,
}

impl WebHcat<'_> {
    /// `POST /pig` or `/mapreduce/jar` (form-encoded), once (the caller
    /// looks a lost answer up by `statusdir`); answers the job id.
    pub async fn submit(&self, job: &Submit<'_>, statusdir: &str) -> Result<String, CallError> {
        let mut form: Vec<(&str, String)> = vec![
            ("user.name", self.user.to_string()),
            ("statusdir", statusdir.to_string()),
            ("enablelog", "false".into()),
        ];
        let path = match job {
            Submit::Pig { file, args } => {
                form.push(("file", file.to_string()));
                form.extend(args.iter().map(|a| ("arg", a.clone())));
                "pig"
            }
            Submit::Jar { jar, class, args } => {
                form.push(("jar", jar.to_string()));
                if let Some(class) = class {
                    form.push(("class", class.to_string()));
                }
                form.extend(args.iter().map(|a| ("arg", a.clone())));
                "mapreduce/jar"
            }
        };
        let url = format!("{}/{path}", self.url);
        let response = self
            .gateway
            .send_once(BACKEND, &format!("POST /{path}"), &|http| {
                http.post(&url).form(&form)
            })
            .await?;
        let submitted: Submitted = read_json(response).await?;
        Ok(submitted.id)
    }

    /// `GET /jobs/ID`; `None` when WebHCat does not know it.
    pub async fn get(&self, id: &str) -> Result<Option<WebHcatJob>, CallError> {
        let url = format!("{}/jobs/{id}", self.url);
        match self
            .gateway
            .get_json(BACKEND, "GET /jobs/ID", &|http| {
                http.get(&url).query(&[("user.name", self.user)])
            })
            .await
        {
            Err(e) if unknown_job(&e) => Ok(None),
            other => other,
        }
    }

    /// Every job of the user with its details: one request
    /// (`GET /jobs?fields=*&showall=true`).
    pub async fn list(&self) -> Result<Vec<WebHcatJob>, CallError> {
        self.list_after(None).await
    }

    /// The jobs whose id sorts after `after` (WebHCat's `jobid`, which it
    /// compares as text), with their details: one request whose answer
    /// holds only the jobs since the oldest one watched, not the
    /// cluster's whole history.
    pub async fn list_after(&self, after: Option<&str>) -> Result<Vec<WebHcatJob>, CallError> {
        let url = format!("{}/jobs", self.url);
        let listed: Vec<Listed> = self
            .gateway
            .get_json(BACKEND, "GET /jobs", &|http| {
                let request = http.get(&url).query(&[
                    ("user.name", self.user),
                    ("fields", "*"),
                    ("showall", "true"),
                ]);
                match after {
                    Some(id) => request.query(&[("jobid", id)]),
                    None => request,
                }
            })
            .await?
            .unwrap_or_default();
        Ok(listed.into_iter().filter_map(|l| l.detail).collect())
    }

    /// The job submitted with `statusdir`, if WebHCat has one.
    pub async fn find(&self, statusdir: &str) -> Result<Option<WebHcatJob>, CallError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .find(|j| j.statusdir() == Some(statusdir)))
    }

    /// `DELETE /jobs/ID`: kills the job. Gone already is fine.
    pub async fn kill(&self, id: &str) -> Result<(), CallError> {
        let url = format!("{}/jobs/{id}", self.url);
        match self
            .gateway
            .send(BACKEND, "DELETE /jobs/ID", &|http| {
                http.delete(&url).query(&[("user.name", self.user)])
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_status(404) || unknown_job(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_before_keeps_the_width_webhcat_sorts_by() {
        assert_eq!(
            id_before("job_1700000000000_0042").as_deref(),
            Some("job_1700000000000_0041")
        );
        assert_eq!(
            id_before("job_1700000000000_1000").as_deref(),
            Some("job_1700000000000_0999")
        );
        assert_eq!(id_before("job_1700000000000_0001"), None);
        assert_eq!(id_before("job_x"), None);
    }
}
