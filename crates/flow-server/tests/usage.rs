//! What a flow's clusters used and cost, as the viewer's JSON answers it:
//! per run on `…/runs` and for the flow on both `…/runs` and the flow's
//! detail. A real server on a real SQLite store holding a run with an EMR
//! cluster record of known instance groups and times, priced by a table
//! that lacks the spot price.

use chrono::{TimeDelta, Utc};
use flow_core::{
    ClusterHandle, ClusterRecord, ClusterState, ClusterUsage, FlowKey, FlowState, FlowStore,
    InstanceGroup, Market, PriceTable, Timeperiod,
};
use flow_server::{FlowFile, Server, ServerOptions};
use flow_store_sqlite::{SqliteOptions, SqliteStore};
use std::collections::BTreeMap;
use std::sync::Arc;

// Shared with first_event.rs, which uses the log-line half.
#[allow(dead_code)]
#[path = "../examples/support/recorded.rs"]
mod recorded;

const TP: &str = "2026112800";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_the_flow_show_their_instance_hours_and_cost() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn FlowStore> =
        Arc::new(SqliteStore::open(&dir.path().join("flow.db"), SqliteOptions::default()).unwrap());
    let tp: Timeperiod = TP.parse().unwrap();
    let key = FlowKey::new("costly", tp);
    let (lease, run) = recorded::record_run(&*store, &key, FlowState::Processed, &[]).await;
    let ended = Utc::now();
    let launched = ended - TimeDelta::minutes(90);
    let group = |role: &str, market, count| InstanceGroup {
        role: role.into(),
        instance_type: "m5.xlarge".into(),
        market,
        count,
    };
    let record = ClusterRecord {
        id: None,
        flow_name: key.flow_name.clone(),
        timeperiod: tp,
        run: run.clone(),
        handle: ClusterHandle {
            kind: "emr".into(),
            name: "emr-0".into(),
            backend_id: "j-1".into(),
            reused: false,
            details: BTreeMap::new(),
        },
        state: ClusterState::Terminated,
        launched_at: launched,
        updated_at: ended,
        message: None,
        usage: ClusterUsage {
            instances: Some(vec![
                group("MASTER", Market::OnDemand, 1),
                group("CORE", Market::Spot, 2),
            ]),
            ended_at: Some(ended),
            normalized_instance_hours: None,
        },
    };
    store.save_cluster(&lease, &record).await.unwrap();

    let mut options = ServerOptions::new(
        store,
        vec![FlowFile {
            graph: recorded::one_step_flow("costly", "a"),
            origin: "test".into(),
        }],
    );
    options.bind = "127.0.0.1:0".parse().unwrap();
    options.prices = Some(PriceTable {
        currency: "USD".into(),
        prices: BTreeMap::from([("m5.xlarge".into(), 0.2)]),
    });
    let server = Server::bind(options).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let serving = tokio::spawn(server.run(async move { stopped.cancelled().await }));

    let get = |path: String| async move {
        let response = reqwest::get(path).await.unwrap();
        assert_eq!(response.status(), 200);
        response.json::<serde_json::Value>().await.unwrap()
    };
    let runs = get(format!("{base}/api/flows/costly/{TP}/runs")).await;
    let usage = &runs["runs"][0]["usage"];
    // 1.5 h × (1 on-demand + 2 spot); only the on-demand hours priced.
    assert_eq!(usage["instance_hours"], 4.5, "{runs}");
    assert_eq!(usage["cost"]["amount"], 0.2 * 1.5, "{runs}");
    assert_eq!(usage["cost"]["unpriced"][0]["market"], "spot", "{runs}");
    assert_eq!(
        usage["cost"]["unpriced"][0]["instance_hours"], 3.0,
        "{runs}"
    );
    assert_eq!(
        usage["text"],
        "4.50 instance-hours, ~$0.30 + unknown (no price for m5.xlarge spot, 3.00 instance-hours)"
    );
    assert_eq!(runs["usage"], *usage, "one run: the flow's is the run's");
    let detail = get(format!("{base}/api/flows/costly/{TP}")).await;
    assert_eq!(detail["usage"], *usage, "{detail}");
    assert_eq!(detail["run"]["usage"], *usage, "{detail}");

    stop.cancel();
    let _ = serving.await;
}
