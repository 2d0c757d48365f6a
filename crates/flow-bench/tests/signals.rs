//! The signals shapes' exporters, in a process of their own: they install
//! the global log subscriber (with the traces' layer), as `flow run` does.

use flow_bench::measure::{measure, Setup};
use flow_bench::Shape;

/// The shapes' exporters reach the receiver: a lineage START and
/// COMPLETE per step (in batches, or one a request), the success
/// webhook and the run's spans; each repeat's counts are its own.
#[test]
fn signals_chain_posts_every_event_to_the_receiver() {
    let setup = Setup {
        synchronous: flow_store_sqlite::Synchronous::Normal,
        clusters: None,
        flow_bin: "flow".into(),
        validate_file: None,
        // Each repeat exports its own events and spans.
        repeat: 2,
        no_logs: false,
        scratch: None,
        mongo_server: None,
    };
    for (name, batched) in [("signals-chain-5", true), ("signals-single-chain-5", false)] {
        let shape: Shape = name.parse().unwrap();
        assert_eq!(shape, Shape::SignalsChain { steps: 5, batched });
        let row = measure(shape, &setup).unwrap();
        assert_eq!(row.shape, name);
        let details = &row.details;
        assert_eq!(details["stored_steps_processed"], 5);
        assert_eq!(details["webhook_requests"], 1, "{details:?}");
        assert_eq!(details["lineage_events"], 2 * 5, "{details:?}");
        let requests = details["lineage_requests"].as_u64().unwrap();
        let batches = details["lineage_batch_requests"].as_u64().unwrap();
        if batched {
            assert!((1..=2 * 5).contains(&requests), "{details:?}");
            assert_eq!(batches, requests, "{details:?}");
        } else {
            assert_eq!((requests, batches), (2 * 5, 0), "{details:?}");
        }
        assert!(details["trace_requests"].as_u64() >= Some(1), "{details:?}");
    }
}
