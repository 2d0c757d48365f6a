//! The scheduler's Jobs, as the Synergy Scheduler 2.3 keeps them: one
//! collection per qualifier (`job_hourly`, `job_daily`, `job_monthly`,
//! `job_yearly`), keyed by `process_name` + `timeperiod`, with `state`,
//! `number_of_failures`, `event_log` and `related_unit_of_work` written the
//! way Synergy's ODM writes them (`_id` an ObjectId, `related_unit_of_work`
//! its hex text, no field for a `None`). `depends_on_flows`, `not_before`,
//! `run_mode`, `updated_at` and the fence stamp are this engine's additions, which
//! Synergy's `Job.from_json` ignores.
//!
//! Writes are fenced like every other (the document's `fence_token`), by
//! the lease of the Job's claim key; acquiring a claim raises the stamp of
//! its Job (`MongoStore::raise_job_fence`).

use crate::model::{DateValue, Unreadable};
use crate::odm::{decode, is_duplicate_key, token_bson, Collection, Model, FENCE};
use crate::store::limit_i64;
use crate::MongoStore;
use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use flow_core::job::CLAIM_PREFIX;
use flow_core::{
    FlowKey, JobKey, JobQuery, JobState, JobTally, Lease, RecordId, RunMode, StoreError,
    TimeQualifier, TimetableJob,
};
use mongodb::IndexModel;
use serde::{Deserialize, Serialize};

/// A document of Synergy's Job collections (fields in the ODM's
/// alphabetical order, `_id` first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDoc {
    /// The document's `_id`.
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none", default)]
    pub id: Option<ObjectId>,
    /// Ours: the flows the Job's flow waits for.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub depends_on_flows: Vec<String>,
    /// Ours: when the period became due.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub due_at: Option<DateValue>,
    /// What happened, oldest first (at most 128).
    #[serde(default)]
    pub event_log: Vec<String>,
    /// Ours: no run before this.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub not_before: Option<DateValue>,
    /// Failed managed runs.
    #[serde(default)]
    pub number_of_failures: i64,
    /// The flow's name.
    pub process_name: String,
    /// The latest managed run's id, as hex text (Synergy's ODM writes
    /// `ObjectIdField`s as strings).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub related_unit_of_work: Option<String>,
    /// Ours: the managed mode of the next run.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub run_mode: Option<String>,
    /// Ours: when the first managed run started.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<DateValue>,
    /// Synergy's state string.
    pub state: String,
    /// `YYYYMMDDHH`.
    pub timeperiod: String,
    /// Ours: when the Job was last written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub updated_at: Option<DateValue>,
}

impl Model for JobDoc {
    /// The hourly collection's name; the others are in
    /// [`collection_name`], all with this model's indexes.
    const COLLECTION: &'static str = "job_hourly";
    const KEY: &'static [&'static str] = &["process_name", "timeperiod"];
    fn extra_indexes() -> Vec<IndexModel> {
        vec![
            IndexModel::builder()
                .keys(doc! { "state": 1, "timeperiod": 1 })
                .build(),
            IndexModel::builder()
                .keys(doc! { "process_name": 1, "timeperiod": 1, FENCE: 1 })
                .build(),
            // What `tally_jobs` groups by, for a flow.
            IndexModel::builder()
                .keys(doc! { "process_name": 1, "state": 1, "number_of_failures": 1 })
                .build(),
        ]
    }
}

/// Synergy's collection of a qualifier's Jobs.
pub fn collection_name(q: TimeQualifier) -> &'static str {
    match q {
        TimeQualifier::Hourly => "job_hourly",
        TimeQualifier::Daily => "job_daily",
        TimeQualifier::Monthly => "job_monthly",
        TimeQualifier::Yearly => "job_yearly",
    }
}

const QUALIFIERS: [TimeQualifier; 4] = [
    TimeQualifier::Hourly,
    TimeQualifier::Daily,
    TimeQualifier::Monthly,
    TimeQualifier::Yearly,
];

/// The four collections and their indexes, for `connect`.
pub fn job_indexes() -> Vec<(&'static str, Vec<IndexModel>)> {
    QUALIFIERS
        .iter()
        .map(|q| (collection_name(*q), Collection::<JobDoc>::indexes()))
        .collect()
}

impl JobDoc {
    /// The document of `job`.
    pub fn from_job(job: &TimetableJob) -> Result<JobDoc, Unreadable> {
        Ok(JobDoc {
            id: job.id.as_ref().map(crate::model::object_id).transpose()?,
            depends_on_flows: job.depends_on_flows.clone(),
            due_at: job.due_at.map(DateValue::of),
            event_log: job.event_log.clone(),
            not_before: job.not_before.map(DateValue::of),
            number_of_failures: i64::from(job.number_of_failures),
            process_name: job.process_name.clone(),
            related_unit_of_work: job
                .related_unit_of_work
                .as_ref()
                .map(|r| r.as_str().to_string()),
            run_mode: job.run_mode.map(|m| m.as_str().to_string()),
            started_at: job.started_at.map(DateValue::of),
            state: job.state.as_str().to_string(),
            timeperiod: job.timeperiod.to_string(),
            updated_at: job.updated_at.map(DateValue::of),
        })
    }

    /// The Job this document holds, in `q`'s collection.
    pub fn to_job(&self, q: TimeQualifier) -> Result<TimetableJob, Unreadable> {
        Ok(TimetableJob {
            id: self.id.map(|id| RecordId::new(id.to_hex())),
            process_name: self.process_name.clone(),
            time_qualifier: q,
            timeperiod: self
                .timeperiod
                .parse()
                .map_err(|e| format!("timeperiod: {e}"))?,
            state: JobState::parse(&self.state)
                .ok_or_else(|| format!("state: unknown '{}'", self.state))?,
            related_unit_of_work: self.related_unit_of_work.clone().map(RecordId::new),
            event_log: self.event_log.clone(),
            number_of_failures: u32::try_from(self.number_of_failures).map_err(|_| {
                format!(
                    "number_of_failures: {} is not a count",
                    self.number_of_failures
                )
            })?,
            run_mode: self
                .run_mode
                .as_deref()
                .map(|m| RunMode::parse(m).ok_or_else(|| format!("run_mode: unknown '{m}'")))
                .transpose()?,
            not_before: self
                .not_before
                .as_ref()
                .map(|d| d.to_chrono("not_before"))
                .transpose()?,
            updated_at: self
                .updated_at
                .as_ref()
                .map(|d| d.to_chrono("updated_at"))
                .transpose()?,
            depends_on_flows: self.depends_on_flows.clone(),
            due_at: self
                .due_at
                .as_ref()
                .map(|d| d.to_chrono("due_at"))
                .transpose()?,
            started_at: self
                .started_at
                .as_ref()
                .map(|d| d.to_chrono("started_at"))
                .transpose()?,
        })
    }
}

fn key_filter(key: &JobKey) -> Document {
    doc! { "process_name": &key.process_name, "timeperiod": key.timeperiod.to_string() }
}

impl MongoStore {
    fn job_collection(&self, q: TimeQualifier) -> Collection<JobDoc> {
        Collection::named(&self.db, collection_name(q))
    }

    fn decode_job(
        &self,
        q: TimeQualifier,
        key: &dyn std::fmt::Display,
        d: Document,
    ) -> Result<TimetableJob, StoreError> {
        decode::<JobDoc>(d)
            .and_then(|j| j.to_job(q))
            .map_err(|m| self.corrupt("job record", key.to_string(), m))
    }

    /// Raises the fence stamp of the Job a claim key names (every
    /// qualifier's collection: the key does not carry it), so a claimant
    /// that lost its claim writes nothing even before the new one writes.
    pub(crate) async fn raise_job_fence(
        &self,
        key: &FlowKey,
        token: u64,
    ) -> Result<(), StoreError> {
        let Some(name) = key.flow_name.strip_prefix(CLAIM_PREFIX) else {
            return Ok(());
        };
        let filter = doc! { "process_name": name, "timeperiod": key.timeperiod.to_string() };
        let update = doc! { "$max": { FENCE: token_bson(token) } };
        for q in QUALIFIERS {
            self.job_collection(q)
                .inner
                .update_many(filter.clone(), update.clone())
                .await
                .map_err(|e| self.op_error("raising the fence", key, e))?;
        }
        Ok(())
    }

    pub(crate) async fn job_get(&self, key: &JobKey) -> Result<Option<TimetableJob>, StoreError> {
        let found = self
            .job_collection(key.time_qualifier)
            .inner
            .find_one(key_filter(key))
            .await
            .map_err(|e| self.op_error("get_job", key, e))?;
        found
            .map(|d| self.decode_job(key.time_qualifier, key, d))
            .transpose()
    }

    pub(crate) async fn job_create(&self, job: &TimetableJob) -> Result<TimetableJob, StoreError> {
        let key = job.key();
        let mut document = crate::odm::encode(
            &JobDoc::from_job(job).map_err(|m| self.op_error("create_job", &key, m))?,
        )
        .map_err(|e| self.op_error("create_job", &key, e))?;
        document.insert("_id", ObjectId::new());
        document.insert(FENCE, 0_i64);
        match self
            .job_collection(key.time_qualifier)
            .inner
            .insert_one(document)
            .await
        {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(self.op_error("create_job", &key, e)),
        }
        self.job_get(&key)
            .await?
            .ok_or_else(|| self.op_error("create_job", &key, "the Job vanished after its insert"))
    }

    pub(crate) async fn job_save(
        &self,
        lease: &Lease,
        job: &TimetableJob,
    ) -> Result<TimetableJob, StoreError> {
        let key = job.key();
        if key.claim_key() != lease.key {
            return Err(self.op_error(
                "save_job",
                &key,
                format!("not claimed by the lease of {}", lease.key),
            ));
        }
        let document = JobDoc::from_job(job).map_err(|m| self.op_error("save_job", &key, m))?;
        let collection = self.job_collection(key.time_qualifier);
        let upserted = match collection
            .upsert_fenced(&document, lease.token, ObjectId::new(), None)
            .await
        {
            Ok(u) => u,
            Err(e) => return Err(self.fenced_error("save_job", lease, e).await),
        };
        // A Job this write created while the claim moved on is removed.
        if upserted.inserted && !self.lease_current(lease, None).await? {
            let filter = doc! { "_id": upserted.id, FENCE: token_bson(lease.token) };
            if let Err(e) = collection.inner.delete_one(filter).await {
                tracing::warn!(job = %key, "cannot remove a Job written with a lost claim: {}", self.scrub(crate::error::driver_message(&e)));
            }
            return Err(self.fenced(lease).await);
        }
        self.job_get(&key)
            .await?
            .ok_or_else(|| self.op_error("save_job", &key, "the Job vanished after its write"))
    }

    /// Counted by the server (a `$group` per state on the `process_name,
    /// state, number_of_failures` index), never by reading the Jobs here.
    /// One state at a time: nx-27017 groups by a top-level field only.
    pub(crate) async fn job_tally(
        &self,
        process_name: &str,
        q: TimeQualifier,
    ) -> Result<Vec<JobTally>, StoreError> {
        use futures_util::TryStreamExt;
        let what = format!("flow '{process_name}'");
        let mut tally = Vec::new();
        for state in JobState::ALL {
            let pipeline = [
                doc! { "$match": { "process_name": process_name, "state": state.as_str() } },
                doc! { "$group": { "_id": "$number_of_failures", "jobs": { "$sum": 1 } } },
            ];
            let rows: Vec<Document> = self
                .job_collection(q)
                .inner
                .aggregate(pipeline)
                .await
                .map_err(|e| self.op_error("tally_jobs", &what, e))?
                .try_collect()
                .await
                .map_err(|e| self.op_error("tally_jobs", &what, e))?;
            for row in rows {
                let count = |v: Option<&Bson>| match v {
                    // Synergy's ODM may leave the field out: no failures.
                    None | Some(Bson::Null) => Some(0),
                    Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
                    Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
                    Some(Bson::Double(n)) if n.fract() == 0.0 && *n >= 0.0 => Some(*n as u64),
                    Some(_) => None,
                };
                let failures = count(row.get("_id")).and_then(|n| u32::try_from(n).ok());
                let jobs = count(row.get("jobs"));
                let (Some(number_of_failures), Some(jobs)) = (failures, jobs) else {
                    return Err(self.corrupt(
                        "job record",
                        &what,
                        format!("number_of_failures or count not a count: {row}"),
                    ));
                };
                tally.push(JobTally {
                    state: *state,
                    number_of_failures,
                    jobs,
                });
            }
        }
        Ok(tally)
    }

    pub(crate) async fn job_list(&self, query: &JobQuery) -> Result<Vec<TimetableJob>, StoreError> {
        let mut filter = Document::new();
        if let Some(name) = &query.process_name {
            filter.insert("process_name", name);
        }
        if !query.states.is_empty() {
            let states: Vec<Bson> = query
                .states
                .iter()
                .map(|s| Bson::from(s.as_str()))
                .collect();
            filter.insert("state", doc! { "$in": states });
        }
        crate::store::timeperiod_range(&mut filter, query.from, query.to);
        let what = query
            .process_name
            .as_deref()
            .map_or_else(|| "every flow".to_string(), |n| format!("flow '{n}'"));
        let mut all = Vec::new();
        for q in QUALIFIERS {
            if query.time_qualifier.is_some_and(|wanted| wanted != q) {
                continue;
            }
            let found = self
                .job_collection(q)
                .find_all(
                    filter.clone(),
                    doc! { "timeperiod": if query.newest_first { -1 } else { 1 }, "process_name": 1 },
                    None,
                    limit_i64(query.limit),
                )
                .await
                .map_err(|e| self.op_error("list_jobs", &what, e))?;
            for r in found {
                match r {
                    Ok(d) => all.push(
                        d.to_job(q)
                            .map_err(|m| self.corrupt("job record", &what, m))?,
                    ),
                    Err((d, m)) => {
                        return Err(self.corrupt(
                            "job record",
                            &what,
                            format!(
                                "{m} in {}",
                                d.get("_id").map_or_else(String::new, ToString::to_string)
                            ),
                        ))
                    }
                }
            }
        }
        all.sort_by(|a, b| {
            let order = a.timeperiod.cmp(&b.timeperiod);
            let order = if query.newest_first {
                order.reverse()
            } else {
                order
            };
            order.then_with(|| a.process_name.cmp(&b.process_name))
        });
        if let Some(limit) = query.limit {
            all.truncate(limit);
        }
        Ok(all)
    }
}
