//! One step run's OpenLineage `RunEvent`, written straight to its JSON
//! bytes from typed fields (two events a step: building a `serde_json`
//! tree first cost the exporters' thread most of its time).

use super::LineageFlow;
use super::{JOB_TYPE_SCHEMA, NOMINAL_TIME_SCHEMA, PARENT_SCHEMA, PRODUCER, RUN_EVENT_SCHEMA};
use chrono::{DateTime, SecondsFormat, Utc};
use flow_core::lineage::Dataset;
use flow_core::FlowKey;
use serde::Serialize;
use uuid::Uuid;

/// The step run an event is about.
pub(super) struct StepRun<'a> {
    pub namespace: &'a str,
    pub flow: &'a FlowKey,
    pub parent: Uuid,
    pub step: &'a str,
    pub id: Uuid,
    /// The flow file's facts, when the flow is known.
    pub about: Option<&'a LineageFlow>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunEvent<'a> {
    event_type: &'a str,
    event_time: String,
    producer: &'static str,
    #[serde(rename = "schemaURL")]
    schema_url: &'static str,
    run: Run<'a>,
    job: Job<'a>,
    inputs: Vec<DatasetRef<'a>>,
    outputs: Vec<DatasetRef<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Run<'a> {
    run_id: String,
    facets: RunFacets<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunFacets<'a> {
    parent: ParentFacet<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nominal_time: Option<NominalTimeFacet>,
}

/// What every facet starts with.
#[derive(Serialize)]
struct FacetHead {
    #[serde(rename = "_producer")]
    producer: &'static str,
    #[serde(rename = "_schemaURL")]
    schema_url: &'static str,
}

impl FacetHead {
    fn of(schema_url: &'static str) -> FacetHead {
        FacetHead {
            producer: PRODUCER,
            schema_url,
        }
    }
}

#[derive(Serialize)]
struct ParentFacet<'a> {
    #[serde(flatten)]
    head: FacetHead,
    run: ParentRun,
    job: JobName<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ParentRun {
    run_id: String,
}

#[derive(Serialize)]
struct JobName<'a> {
    namespace: &'a str,
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NominalTimeFacet {
    #[serde(flatten)]
    head: FacetHead,
    nominal_start_time: String,
    nominal_end_time: String,
}

#[derive(Serialize)]
struct Job<'a> {
    #[serde(flatten)]
    name: JobName<'a>,
    facets: JobFacets,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobFacets {
    job_type: JobTypeFacet,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobTypeFacet {
    #[serde(flatten)]
    head: FacetHead,
    processing_type: &'static str,
    integration: &'static str,
    job_type: &'static str,
}

#[derive(Serialize)]
struct DatasetRef<'a> {
    namespace: &'a str,
    name: &'a str,
}

/// The datasets' names, as an event lists them.
fn list(sets: Option<&Vec<Dataset>>) -> Vec<DatasetRef<'_>> {
    sets.into_iter()
        .flatten()
        .map(|d| DatasetRef {
            namespace: d.namespace(),
            name: d.name(),
        })
        .collect()
}

/// One step run's `RunEvent` of `kind` (`START`, `COMPLETE`, ...), as JSON.
pub(super) fn run_event(kind: &str, run: &StepRun<'_>) -> Vec<u8> {
    let StepRun {
        namespace,
        flow,
        parent,
        step,
        id,
        about,
    } = *run;
    let datasets = about.and_then(|a| a.datasets.get(step));
    let time = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let event = RunEvent {
        event_type: kind,
        event_time: time(Utc::now()),
        producer: PRODUCER,
        schema_url: RUN_EVENT_SCHEMA,
        run: Run {
            run_id: id.to_string(),
            facets: RunFacets {
                parent: ParentFacet {
                    head: FacetHead::of(PARENT_SCHEMA),
                    run: ParentRun {
                        run_id: parent.to_string(),
                    },
                    job: JobName {
                        namespace,
                        name: flow.flow_name.clone(),
                    },
                },
                // The timeperiod the run processes: its start, and the
                // next one's.
                nominal_time: about.map(|about| NominalTimeFacet {
                    head: FacetHead::of(NOMINAL_TIME_SCHEMA),
                    nominal_start_time: time(flow.timeperiod.start()),
                    nominal_end_time: time(flow.timeperiod.next(about.time_qualifier).start()),
                }),
            },
        },
        job: Job {
            name: JobName {
                namespace,
                name: format!("{}.{step}", flow.flow_name),
            },
            facets: JobFacets {
                job_type: JobTypeFacet {
                    head: FacetHead::of(JOB_TYPE_SCHEMA),
                    processing_type: "BATCH",
                    integration: "FLOW",
                    job_type: "STEP",
                },
            },
        },
        inputs: list(datasets.map(|d| &d.inputs)),
        outputs: list(datasets.map(|d| &d.outputs)),
    };
    // Strings and numbers only: it always encodes.
    serde_json::to_vec(&event).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::lineage::StepDatasets;
    use flow_core::TimeQualifier;
    use serde_json::json;

    /// The event a step with datasets gets, field by field (its time is
    /// the only field not fixed by its inputs).
    #[test]
    fn a_step_event_holds_the_spec_fields_its_facets_and_datasets() {
        let dataset = |uri: &str| Dataset::try_from(uri.to_string()).unwrap();
        let about = LineageFlow {
            time_qualifier: TimeQualifier::Daily,
            datasets: [(
                "load".to_string(),
                StepDatasets {
                    inputs: vec![dataset("s3://raw/events")],
                    outputs: vec![dataset("gs://lake/daily"), dataset("/data/out")],
                },
            )]
            .into(),
        };
        let flow = FlowKey::new("etl", "2026112800".parse().unwrap());
        let (parent, id) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let run = |about| StepRun {
            namespace: "team",
            flow: &flow,
            parent,
            step: "load",
            id,
            about,
        };
        let mut event: serde_json::Value =
            serde_json::from_slice(&run_event("START", &run(Some(&about)))).unwrap();
        let time = event["eventTime"].take();
        let time = time.as_str().unwrap();
        assert!(DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        let head = |schema: &str| json!({ "_producer": PRODUCER, "_schemaURL": schema });
        let mut parent_facet = head(PARENT_SCHEMA);
        parent_facet["run"] = json!({ "runId": parent.to_string() });
        parent_facet["job"] = json!({ "namespace": "team", "name": "etl" });
        let mut nominal = head(NOMINAL_TIME_SCHEMA);
        nominal["nominalStartTime"] = json!("2026-11-28T00:00:00.000Z");
        nominal["nominalEndTime"] = json!("2026-11-29T00:00:00.000Z");
        let mut job_type = head(JOB_TYPE_SCHEMA);
        job_type["processingType"] = json!("BATCH");
        job_type["integration"] = json!("FLOW");
        job_type["jobType"] = json!("STEP");
        let named = |d: &Dataset| json!({ "namespace": d.namespace(), "name": d.name() });
        let datasets = &about.datasets["load"];
        assert_eq!(
            event,
            json!({
                "eventType": "START",
                "eventTime": null,
                "producer": PRODUCER,
                "schemaURL": RUN_EVENT_SCHEMA,
                "run": {
                    "runId": id.to_string(),
                    "facets": { "parent": parent_facet, "nominalTime": nominal },
                },
                "job": {
                    "namespace": "team",
                    "name": "etl.load",
                    "facets": { "jobType": job_type },
                },
                "inputs": datasets.inputs.iter().map(named).collect::<Vec<_>>(),
                "outputs": datasets.outputs.iter().map(named).collect::<Vec<_>>(),
            })
        );

        // A flow the exporters were not told about: no nominal time, no
        // datasets.
        let event: serde_json::Value =
            serde_json::from_slice(&run_event("COMPLETE", &run(None))).unwrap();
        assert_eq!(event["eventType"], "COMPLETE");
        assert_eq!(event["run"]["facets"].as_object().unwrap().len(), 1);
        assert_eq!(event["inputs"], json!([]));
        assert_eq!(event["outputs"], json!([]));
    }
}
