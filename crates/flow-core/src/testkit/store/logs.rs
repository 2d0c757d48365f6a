//! Log lines: order under concurrent writers, filters and purge.

use super::*;

/// Concurrent writers, batches per writer and lines per batch in the log
/// order check.
const LOG_WRITERS: usize = 6;
const LOG_BATCHES: usize = 10;
const LOG_BATCH_LINES: usize = 7;

impl Suite {
    pub(super) async fn logs_in_order_under_concurrent_writers(&self) {
        let key = key("logs");
        let lease = self.lease(&key, "logger", 0).await;
        let (_, run) = ok(
            "begin_run",
            &key,
            self.store()
                .begin_run(
                    &lease,
                    &flow_record(&key, FlowState::InProgress, 0),
                    false,
                    &[],
                    &run_record(&lease, RunMode::Nominal, 0),
                )
                .await,
        );
        let run_id = run
            .id
            .unwrap_or_else(|| panic!("begin_run of {key}: run without id"));
        let barrier = Arc::new(tokio::sync::Barrier::new(LOG_WRITERS));
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..LOG_WRITERS {
            let store = self.handle(w);
            let key = key.clone();
            let run_id = run_id.clone();
            let barrier = barrier.clone();
            writers.spawn(async move {
                barrier.wait().await;
                for b in 0..LOG_BATCHES {
                    let step = (w % 2 == 0).then(|| format!("step-{w}"));
                    let lines: Vec<_> = (0..LOG_BATCH_LINES)
                        .map(|l| {
                            line(
                                &key,
                                &run_id,
                                step.as_deref(),
                                format!("w{w} b{b} l{l}"),
                                (b * LOG_BATCH_LINES + l) as i64,
                            )
                        })
                        .collect();
                    store.append_logs(&lines).await?;
                }
                Ok::<_, StoreError>(())
            });
        }
        while let Some(joined) = writers.join_next().await {
            ok(
                "append_logs (concurrent)",
                &key,
                joined.unwrap_or_else(|e| panic!("log writer panicked: {e}")),
            );
        }
        let total = LOG_WRITERS * LOG_BATCHES * LOG_BATCH_LINES;
        let all = ok(
            "read_logs",
            &key,
            self.store()
                .read_logs(&LogQuery::new(key.clone(), total + 10))
                .await,
        );
        assert_eq!(
            all.len(),
            total,
            "read_logs of {key}: {} lines, appended {total}",
            all.len()
        );
        assert!(
            all.windows(2).all(|w| w[0].position < w[1].position),
            "read_logs of {key}: positions not strictly increasing"
        );
        for w in 0..LOG_WRITERS {
            let mine: Vec<_> = all
                .iter()
                .filter(|l| l.line.message.starts_with(&format!("w{w} ")))
                .map(|l| l.line.message.clone())
                .collect();
            let expected: Vec<_> = (0..LOG_BATCHES)
                .flat_map(|b| (0..LOG_BATCH_LINES).map(move |l| format!("w{w} b{b} l{l}")))
                .collect();
            assert_eq!(
                mine, expected,
                "read_logs of {key}: writer {w}'s lines out of order or missing"
            );
        }
        // A batch is contiguous: nothing of another writer inside it.
        for chunk in all.chunk_by(|a, b| {
            a.line
                .message
                .split(' ')
                .take(2)
                .eq(b.line.message.split(' ').take(2))
        }) {
            assert_eq!(
                chunk.len() % LOG_BATCH_LINES,
                0,
                "read_logs of {key}: a batch was interleaved with another writer's lines"
            );
        }
        // Paging by `after` gives the same lines, no gap, no repeat.
        let mut paged: Vec<StoredLogLine> = Vec::new();
        loop {
            let mut q = LogQuery::new(key.clone(), 13);
            q.after = paged.last().map(|l| l.position);
            let page = ok("read_logs (page)", &key, self.store().read_logs(&q).await);
            assert!(
                page.len() <= 13,
                "read_logs of {key}: page longer than its limit"
            );
            if page.is_empty() {
                break;
            }
            paged.extend(page);
        }
        assert_eq!(
            paged, all,
            "read_logs of {key}: paging by after differs from one read"
        );
        assert_eq!(
            ok(
                "last_log_position",
                &key,
                self.store().last_log_position(&key).await
            ),
            all.last().map_or(0, |l| l.position),
            "last_log_position of {key}: not the last line read_logs gives"
        );
        // Appending more continues after the last position.
        let more = line(&key, &run_id, None, "the end".into(), 99_999);
        ok(
            "append_logs",
            &key,
            self.store().append_logs(std::slice::from_ref(&more)).await,
        );
        let mut q = LogQuery::new(key.clone(), 10);
        q.after = all.last().map(|l| l.position);
        let tail = ok("read_logs", &key, self.store().read_logs(&q).await);
        assert_eq!(
            tail.iter().map(|l| &l.line).collect::<Vec<_>>(),
            vec![&more],
            "read_logs of {key} after the last position"
        );
        assert_eq!(
            ok(
                "last_log_position",
                &key,
                self.store().last_log_position(&key).await
            ),
            tail[0].position,
            "last_log_position of {key}: not the line appended last"
        );
        ok(
            "append_logs (empty)",
            &key,
            self.store().append_logs(&[]).await,
        );
        ok(
            "release_lease",
            &key,
            self.store().release_lease(&lease).await,
        );
        eprintln!("store conformance: {total} log lines from {LOG_WRITERS} concurrent writers read back in order");
    }

    pub(super) async fn log_filters_and_purge(&self) {
        let store = self.store();
        let key = key("log-filters");
        let other = FlowKey::new(key.flow_name.clone(), tp("2026112900"));
        let mut run_ids = Vec::new();
        for (i, k) in [&key, &key, &other].into_iter().enumerate() {
            let lease = self.lease(k, "filter", 10 * i as i64).await;
            let (_, run) = ok(
                "begin_run",
                k,
                store
                    .begin_run(
                        &lease,
                        &flow_record(k, FlowState::InProgress, 0),
                        false,
                        &[],
                        &run_record(&lease, RunMode::Nominal, i as i64),
                    )
                    .await,
            );
            ok("release_lease", k, store.release_lease(&lease).await);
            run_ids.push(
                run.id
                    .unwrap_or_else(|| panic!("begin_run of {k}: run without id")),
            );
        }
        let mut lines = Vec::new();
        for (r, run) in run_ids.iter().enumerate().take(2) {
            for step in [None, Some("extract"), Some("load")] {
                lines.push(line(
                    &key,
                    run,
                    step,
                    format!("run {r} {step:?}"),
                    1_000 * r as i64,
                ));
            }
        }
        let mut error_line = line(&key, &run_ids[1], Some("load"), "exit code 1".into(), 1_500);
        error_line.level = LogLevel::Error;
        error_line.logger = "load.shell".into();
        lines.push(error_line.clone());
        ok("append_logs", &key, store.append_logs(&lines).await);
        ok(
            "append_logs",
            &other,
            store
                .append_logs(&[line(&other, &run_ids[2], None, "other".into(), 0)])
                .await,
        );
        let read =
            |q: LogQuery| async move { ok("read_logs", &q.key.clone(), store.read_logs(&q).await) };
        let all = read(LogQuery::new(key.clone(), 100)).await;
        assert_eq!(
            all.iter().map(|l| l.line.clone()).collect::<Vec<_>>(),
            lines,
            "read_logs of {key}: lines differ from those appended"
        );
        let mut q = LogQuery::new(key.clone(), 100);
        q.step = Some("load".into());
        assert_eq!(
            read(q.clone()).await.len(),
            3,
            "read_logs of {key} for step load"
        );
        q.run = Some(run_ids[1].clone());
        let got = read(q.clone()).await;
        assert_eq!(
            got.iter().map(|l| &l.line).collect::<Vec<_>>(),
            vec![&lines[5], &error_line],
            "read_logs of {key} for step load of run 1"
        );
        let mut q = LogQuery::new(key.clone(), 100);
        q.run = Some(run_ids[0].clone());
        assert_eq!(read(q).await.len(), 3, "read_logs of {key} for run 0");
        let mut q = LogQuery::new(key.clone(), 2);
        q.step = Some(String::new());
        assert!(
            read(q).await.is_empty(),
            "read_logs of {key} for step \"\" (not special)"
        );
        let others = read(LogQuery::new(other.clone(), 100)).await;
        assert_eq!(others.len(), 1, "read_logs of {other}: sees {key}'s lines");

        // The last position is the flow run's own, whatever another flow
        // run appended later; 0 for one without lines.
        let last = |k: FlowKey| async move {
            ok("last_log_position", &k, store.last_log_position(&k).await)
        };
        let own = all.last().map_or(0, |l| l.position);
        assert_eq!(last(key.clone()).await, own, "last_log_position of {key}");
        assert_eq!(
            last(other.clone()).await,
            others[0].position,
            "last_log_position of {other}"
        );
        let silent = FlowKey::new(key.flow_name.clone(), tp("2026113000"));
        assert_eq!(
            last(silent.clone()).await,
            0,
            "last_log_position of {silent}, which has no lines"
        );

        // Retention: lines before the cutoff go, later ones stay.
        let purged = ok("purge_logs", &key, store.purge_logs(at(1_000)).await);
        let left = read(LogQuery::new(key.clone(), 100)).await;
        assert_eq!(
            left.len(),
            4,
            "purge_logs before {}: kept {} of {key}'s lines",
            at(1_000),
            left.len()
        );
        assert!(
            left.iter().all(|l| l.line.at >= at(1_000)),
            "purge_logs: kept a line older than the cutoff"
        );
        assert!(
            purged >= 3,
            "purge_logs: reported {purged} deleted lines, at least 3 were older"
        );
        assert_eq!(
            last(key.clone()).await,
            own,
            "last_log_position of {key} after purging older lines"
        );
    }
}
