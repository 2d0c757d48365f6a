//! Apache Livy's batch API (HDInsight's Spark gateway at `/livy`, and any
//! Livy): the calls and bodies the cluster uses, as Livy's
//! `BatchSessionServlet` answers them.

use crate::gateway::{read_json, CallError, Gateway};
use flow_cloud::StateTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Livy's session states by meaning: `success` is a finished application;
/// `dead` and `error` failed ones; `killed` one that was cancelled (older
/// Livy reports a killed batch `dead`).
pub const BATCH_STATES: StateTable = StateTable {
    running: &[
        "not_started",
        "starting",
        "recovering",
        "idle",
        "running",
        "busy",
        "shutting_down",
    ],
    succeeded: &["success"],
    failed: &["dead", "error"],
    cancelled: &["killed"],
};

/// `POST /batches`'s body (`CreateBatchRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateBatch {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub conf: BTreeMap<String, String>,
    /// Client-chosen, unique among Livy's sessions: the flow job's identity.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_user: Option<String>,
}

/// A batch as Livy shows it (`BatchSessionView`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// Livy's id.
    pub id: i64,
    /// The name it was created with.
    #[serde(default)]
    pub name: Option<String>,
    /// Its state.
    pub state: String,
    /// The YARN application, once known.
    #[serde(default)]
    pub app_id: Option<String>,
    /// The last lines of its log.
    #[serde(default)]
    pub log: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct BatchList {
    #[serde(default)]
    total: i64,
    #[serde(default)]
    sessions: Vec<Batch>,
}

#[derive(Debug, Deserialize)]
struct BatchLog {
    #[serde(default)]
    log: Vec<String>,
}

/// Batches per listing request.
const PAGE: i64 = 100;

/// Livy's requests in [`flow_core::meter`].
const BACKEND: &str = "livy";

/// Livy at `url` (`https://CLUSTER.azurehdinsight.net/livy`).
pub(crate) struct Livy<'a> {
    pub gateway: &'a Gateway,
    pub url: &'a str,
}

impl Livy<'_> {
    /// `POST /batches`, once (the caller looks a lost answer up by name).
    pub async fn submit(&self, batch: &CreateBatch) -> Result<Batch, CallError> {
        let url = format!("{}/batches", self.url);
        let response = self
            .gateway
            .send_once(BACKEND, "POST /batches", &|http| {
                http.post(&url).json(batch)
            })
            .await?;
        read_json(response).await
    }

    /// Every batch Livy holds, one page of [`PAGE`] at a time, until
    /// `enough` says the pages so far suffice (one request for a run's
    /// batches, usually).
    pub async fn list(&self, enough: impl Fn(&[Batch]) -> bool) -> Result<Vec<Batch>, CallError> {
        Ok(self.list_from(0, enough).await?.1)
    }

    /// [`list`](Self::list) from position `from` of Livy's list (oldest
    /// first): the batches, and the position of the first.
    pub async fn list_from(
        &self,
        mut from: i64,
        enough: impl Fn(&[Batch]) -> bool,
    ) -> Result<(i64, Vec<Batch>), CallError> {
        let start = from;
        let mut all = Vec::new();
        loop {
            let url = format!("{}/batches", self.url);
            let page: BatchList = self
                .gateway
                .get_json(BACKEND, "GET /batches", &|http| {
                    http.get(&url)
                        .query(&[("from", from.to_string()), ("size", PAGE.to_string())])
                })
                .await?
                .ok_or_else(|| {
                    CallError::Transport(
                        "no batch listing at this URL (HTTP 404): is livy_url right?".into(),
                    )
                })?;
            let count = page.sessions.len() as i64;
            all.extend(page.sessions);
            from += count;
            if count == 0 || from >= page.total || enough(&all) {
                return Ok((start, all));
            }
        }
    }

    /// The batch called `name`, if Livy has one.
    pub async fn find(&self, name: &str) -> Result<Option<Batch>, CallError> {
        let has = |batches: &[Batch]| batches.iter().any(|b| b.name.as_deref() == Some(name));
        Ok(self
            .list(has)
            .await?
            .into_iter()
            .find(|b| b.name.as_deref() == Some(name)))
    }

    /// `GET /batches/ID`; `None` when Livy does not know it.
    pub async fn get(&self, id: i64) -> Result<Option<Batch>, CallError> {
        let url = format!("{}/batches/{id}", self.url);
        self.gateway
            .get_json(BACKEND, "GET /batches/ID", &|http| http.get(&url))
            .await
    }

    /// The last `lines` lines of the batch's log.
    pub async fn log_tail(&self, id: i64, lines: usize) -> Result<Vec<String>, CallError> {
        let url = format!("{}/batches/{id}/log", self.url);
        let log: Option<BatchLog> = self
            .gateway
            .get_json(BACKEND, "GET /batches/ID/log", &|http| {
                http.get(&url).query(&[("size", lines.to_string())])
            })
            .await?;
        Ok(log.map(|l| l.log).unwrap_or_default())
    }

    /// `DELETE /batches/ID`: kills the batch. Gone already is fine.
    pub async fn delete(&self, id: i64) -> Result<(), CallError> {
        let url = format!("{}/batches/{id}", self.url);
        match self
            .gateway
            .send(BACKEND, "DELETE /batches/ID", &|http| http.delete(&url))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_status(404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
