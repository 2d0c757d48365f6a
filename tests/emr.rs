//! The `flow` binary with `[cluster] kind = "emr"` against moto (through
//! `tests/peers/moto_emr.py`, which lets a test finish EMR steps and counts
//! requests). A driver thread plays EMR's part of running steps: it finishes
//! them as the test says. Built only with the `emr` feature; `#[ignore]`d,
//! so `cargo xtask test` runs them when moto is up.

#[path = "peers/moto_emr.rs"]
mod moto_emr;
mod support;

use moto_emr::MotoEmr;
use serde_json::json;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::{days, exit_codes, kill9, step_states, text, wait_until};

const TP: &str = "2026112800";

/// What the driver does with steps that are PENDING or RUNNING.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Leave them running.
    Hold = 0,
    Complete = 1,
    /// FAILED, with failure details and a stderr log uploaded to S3.
    Fail = 2,
}

/// Finishes the EMR steps of the test's clusters as `mode` says.
struct Driver {
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Driver {
    fn start(moto: &MotoEmr, prefix: &str) -> Driver {
        let mode = Arc::new(AtomicU8::new(Mode::Hold as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (moto, prefix, mode, stop) =
                (moto.clone(), prefix.to_string(), mode.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let current = mode.load(Ordering::SeqCst);
                    if current != Mode::Hold as u8 {
                        for cluster in moto.clusters_named(&prefix) {
                            let cid = cluster["id"].as_str().unwrap();
                            for step in moto.steps(cid) {
                                let state = step["state"].as_str().unwrap();
                                if state != "RUNNING" && state != "PENDING" {
                                    continue;
                                }
                                let sid = step["id"].as_str().unwrap();
                                if current == Mode::Complete as u8 {
                                    moto.set_step(cid, sid, "COMPLETED");
                                } else {
                                    moto.fail_step(
                                        cid,
                                        sid,
                                        json!({"reason": "Unknown Error.", "message": "Step failed with exitCode 1"}),
                                        json!({
                                            "stderr": "Traceback (most recent call last):\n  File \"report.py\", line 3\nValueError: bad input for 2026112800\n",
                                            "controller": "INFO startExec 'spark-submit'\nWARN Step failed with exitCode 1\n",
                                        }),
                                    );
                                }
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Driver {
            mode,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A test directory whose settings point the EMR cluster and its S3
/// filesystem at moto, with a unique cluster name and bucket.
struct Emr {
    home: support::Home,
    moto: MotoEmr,
    name: String,
}

impl Emr {
    fn new(test: &str) -> Emr {
        let moto = MotoEmr::from_env();
        let name = format!("e2e-{test}-{}", std::process::id());
        moto.create_bucket(&name);
        let home = support::Home::empty();
        home.write(
            "flow.toml",
            &support::cloud_settings(
                "emr",
                &format!(
                    r#"
[cluster.emr]
name = "{name}"
region = "us-east-1"
endpoint = "{endpoint}"
release_label = "emr-7.5.0"
applications = ["Spark"]
log_uri = "s3://{name}/emr/"
instance_groups = [{{ role = "MASTER", instance_type = "m5.xlarge", count = 1 }}]
launch_poll = "50ms"

[cluster.emr.poll]
floor = "200ms"

[cluster.emr.retry]
initial_delay = "10ms"

[cluster.emr.job_logs]
wait = "5s"
interval = "200ms"

[cluster.emr.s3]
bucket = "{name}"
endpoint = "{endpoint}"
force_path_style = true

"#,
                    endpoint = moto.endpoint
                ),
                "5s",
            ),
        );
        Emr { home, moto, name }
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.home.spawn(args)
    }

    /// The test's EMR clusters: `(id, state)`.
    fn clusters(&self) -> Vec<(String, String)> {
        self.moto
            .clusters_named(&self.name)
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_string(),
                    c["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Waits until one of the test's clusters has a RUNNING step; returns
    /// the cluster id.
    fn wait_for_running_step(&self) -> String {
        wait_until("an EMR step running", || {
            self.clusters()
                .into_iter()
                .map(|(id, _)| id)
                .find(|id| self.moto.steps(id).iter().any(|s| s["state"] == "RUNNING"))
        })
    }

    /// Starts `run` of [`LONG`] in the background; the engine and the
    /// cluster id once its step is RUNNING on EMR.
    fn start_long_run(&self) -> (Child, String) {
        self.home.write("long.toml", LONG);
        let engine = self.spawn(&["run", "long.toml", "--timeperiod", TP]);
        let cid = self.wait_for_running_step();
        (engine, cid)
    }

    /// A run of [`LONG`] killed with its step RUNNING on EMR: the cluster
    /// id.
    fn kill_long_run_mid_step(&self) -> String {
        let (mut engine, cid) = self.start_long_run();
        kill9(&mut engine);
        cid
    }

    /// `recover` of [`LONG`] in the background; once it has asked EMR about
    /// `cid`'s steps twice more (it adopted the step and waits), `driver`
    /// completes the step. Recover's exit code.
    fn recover_adopting(&self, driver: &Driver, cid: &str) -> i32 {
        let asked = self.moto.count(cid, "ListSteps");
        std::thread::scope(|scope| {
            let recover = scope.spawn(|| self.home.recover_until_accepted("long.toml", TP));
            let deadline = Instant::now() + Duration::from_secs(120);
            while self.moto.count(cid, "ListSteps") < asked + 2 {
                assert!(
                    Instant::now() < deadline,
                    "recover never asked about the step"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            driver.set(Mode::Complete);
            recover.join().unwrap()
        })
    }

    /// What a recover that adopted `cid`'s one step leaves: the step added
    /// once, the run processed, the cluster terminated.
    fn assert_adopted_and_terminated(&self, cid: &str) {
        assert_eq!(
            self.moto.count(cid, "AddJobFlowSteps"),
            1,
            "the step was adopted, not added again"
        );
        assert_eq!(self.moto.steps(cid).len(), 1);
        let status = self.home.status_json("emr_long", TP);
        assert_eq!(status["flow"]["state"], "state_processed", "{status}");
        assert_eq!(
            self.clusters(),
            [(cid.to_string(), "TERMINATED".to_string())],
            "recover adopted the cluster and terminated it"
        );
    }

    /// `flow clusters --terminate-orphans` until the test's cluster is
    /// TERMINATED (a dead run's lease must turn stale first); with
    /// `each_exits_0`, every attempt must exit 0.
    fn terminate_orphans_until_terminated(&self, each_exits_0: bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.clusters()[0].1 != "TERMINATED" {
            let out = self.home.flow(&["clusters", "--terminate-orphans"]);
            if each_exits_0 {
                assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            }
            assert!(
                Instant::now() < deadline,
                "never terminated: {}",
                text(&out)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

const REPORT: &str = r#"
name = "emr_report"
time_qualifier = "daily"

[[steps]]
name = "prepare"
main = { action = "mkdir", path = "out/{timeperiod}" }

[[steps]]
name = "compute"
depends_on = ["prepare"]
main = { action = "spark", application = "s3://jobs/report.py", main_class = "Report", args = ["--day", "{timeperiod}"], conf = { "spark.executor.memory" = "2g" } }

[[steps]]
name = "publish"
depends_on = ["compute"]
main = { action = "mkdir", path = "published/{timeperiod}" }
"#;

#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn a_flow_with_spark_and_s3_steps_ends_processed_on_emr_moto() {
    let emr = Emr::new("ok");
    emr.home.write("report.toml", REPORT);
    let driver = Driver::start(&emr.moto, &emr.name);
    driver.set(Mode::Complete);
    let out = emr.home.flow(&["run", "report.toml", "--timeperiod", TP]);
    drop(driver);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = emr.home.status_json("emr_report", TP);
    assert_eq!(status["flow"]["state"], "state_processed", "{status}");
    assert!(
        step_states(&status)
            .iter()
            .all(|(_, s)| s == "state_processed"),
        "{status}"
    );
    // The S3 steps wrote Hadoop's folder markers; the spark step ran on EMR.
    let objects = emr.moto.objects(&emr.name);
    assert!(
        objects.contains(&format!("out/{TP}_$folder$")),
        "{objects:?}"
    );
    assert!(
        objects.contains(&format!("published/{TP}_$folder$")),
        "{objects:?}"
    );
    let clusters = emr.clusters();
    assert_eq!(clusters.len(), 1, "{clusters:?}");
    let (id, state) = &clusters[0];
    assert_eq!(
        state, "TERMINATED",
        "the run's cluster is terminated at its end"
    );
    let steps = emr.moto.steps(id);
    assert_eq!(steps.len(), 1);
    let args: Vec<&str> = steps[0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "spark-submit",
            "--deploy-mode",
            "cluster",
            "--class",
            "Report",
            "--conf",
            "spark.executor.memory=2g",
            "s3://jobs/report.py",
            "--day",
            TP
        ]
    );
    let log = emr.home.read("logs/emr_report/compute.log");
    assert!(log.contains("COMPLETED"), "{log}");
    // The AWS SDK's and hyper's debug events stay out of the step log and
    // the store (FLOW_LOG does not ask for them).
    let recorded = emr.home.flow(&[
        "logs",
        "emr_report",
        "--timeperiod",
        TP,
        "--step",
        "compute",
    ]);
    let recorded = String::from_utf8_lossy(&recorded.stdout).to_string();
    assert!(recorded.contains("COMPLETED"), "{recorded}");
    for text in [&log, &recorded] {
        let debug: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" DEBUG ") || l.contains(" TRACE "))
            .collect();
        assert!(debug.is_empty(), "dependencies' debug lines: {debug:#?}");
    }
    let flow_log = emr.home.read("logs/emr_report/emr_report.log");
    let master_dns = emr
        .moto
        .clusters()
        .into_iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap()["master_dns"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!master_dns.is_empty());
    assert!(
        flow_log.contains(&format!("master node {master_dns}")),
        "the master DNS name moto reports ({master_dns}) is logged: {flow_log}"
    );
}

/// `FLOW_LOG` asks for a dependency's debug events: then they are in the
/// step log (the filter above is the only thing keeping them out).
#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn flow_log_brings_a_dependencys_debug_events_into_the_step_log_on_emr_moto() {
    let emr = Emr::new("flowlog");
    emr.home.write("long.toml", LONG);
    let driver = Driver::start(&emr.moto, &emr.name);
    driver.set(Mode::Complete);
    let out = emr
        .home
        .command(&["run", "long.toml", "--timeperiod", TP])
        .env("FLOW_LOG", "error,aws_smithy_runtime=debug")
        .output()
        .unwrap();
    drop(driver);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = emr.home.read("logs/emr_long/compute.log");
    assert!(
        log.lines().any(|l| l.contains(" DEBUG ")),
        "FLOW_LOG asked for aws_smithy_runtime's debug events: {log}"
    );
}

const FAILING: &str = r#"
name = "emr_failing"
time_qualifier = "daily"

[[steps]]
name = "compute"
main = { action = "spark", application = "s3://jobs/report.py", args = ["{timeperiod}"] }
"#;

#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn a_failing_step_ends_invalid_with_its_stderr_tail_and_recover_completes_it_on_emr_moto() {
    let emr = Emr::new("fail");
    emr.home.write("failing.toml", FAILING);
    let driver = Driver::start(&emr.moto, &emr.name);
    driver.set(Mode::Fail);
    let out = emr.home.flow(&["run", "failing.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let status = emr.home.status_json("emr_failing", TP);
    assert_eq!(status["flow"]["state"], "state_invalid", "{status}");
    let log = emr.home.read("logs/emr_failing/compute.log");
    assert!(
        log.contains("ValueError: bad input for 2026112800"),
        "the stderr tail is in the step log: {log}"
    );
    assert!(
        log.contains("Unknown Error.: Step failed with exitCode 1"),
        "{log}"
    );
    assert!(
        log.contains("WARN Step failed with exitCode 1"),
        "the controller log too: {log}"
    );

    driver.set(Mode::Complete);
    let out = emr
        .home
        .flow(&["recover", "failing.toml", "--timeperiod", TP]);
    drop(driver);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = emr.home.status_json("emr_failing", TP);
    assert_eq!(status["flow"]["state"], "state_processed", "{status}");
    assert!(
        emr.clusters().iter().all(|(_, s)| s == "TERMINATED"),
        "{:?}",
        emr.clusters()
    );
}

const LONG: &str = r#"
name = "emr_long"
time_qualifier = "daily"

[[steps]]
name = "compute"
main = { action = "spark", application = "s3://jobs/long.py" }
"#;

#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn recover_adopts_the_step_of_a_killed_engine_and_terminates_its_cluster_on_emr_moto() {
    let emr = Emr::new("adopt");
    let driver = Driver::start(&emr.moto, &emr.name);
    let cid = emr.kill_long_run_mid_step();
    assert_eq!(emr.moto.count(&cid, "AddJobFlowSteps"), 1);

    let recovering = emr.recover_adopting(&driver, &cid);
    drop(driver);
    assert_eq!(recovering, 0);
    let log = emr.home.read("logs/emr_long/compute.log");
    assert!(log.contains("adopted"), "{log}");
    emr.assert_adopted_and_terminated(&cid);
}

/// Giving up on polling is not a failed attempt: ListSteps throttled past
/// every retry makes the run fail with the step left in progress, its
/// handle kept and its cluster left up; `recover` then adopts the step
/// instead of adding a second copy of it.
#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn a_step_whose_polling_gave_up_is_adopted_by_recover_not_added_again_on_emr_moto() {
    let emr = Emr::new("unknown");
    let driver = Driver::start(&emr.moto, &emr.name);
    let (mut engine, cid) = emr.start_long_run();
    // EMR throttles every ListSteps of this cluster from now on.
    emr.moto.throttle("ListSteps", 1_000_000, Some(&cid));
    let code = engine.wait().unwrap().code();
    assert_eq!(code, Some(1), "the run fails");
    assert_eq!(emr.moto.count(&cid, "AddJobFlowSteps"), 1);
    let status = emr.home.status_json("emr_long", TP);
    assert_eq!(status["flow"]["state"], "state_invalid", "{status}");
    assert_eq!(
        step_states(&status),
        [("compute".to_string(), "state_in_progress".to_string())],
        "the step is left for the next engine, not failed: {status}"
    );
    let log = emr.home.read("logs/emr_long/compute.log");
    assert!(log.contains("outcome unknown"), "{log}");
    assert!(
        ["RUNNING", "WAITING"].contains(&emr.clusters()[0].1.as_str()),
        "the cluster running the step is left up: {:?}",
        emr.clusters()
    );

    emr.moto.heal(Some(&cid));
    let recovering = emr.recover_adopting(&driver, &cid);
    drop(driver);
    assert_eq!(recovering, 0);
    emr.assert_adopted_and_terminated(&cid);
}

/// A cluster has slots: with `step_concurrency_level = 14`, fourteen
/// independent steps on one cluster are all added to it before any of them
/// ends (one step at a time, only the first would be).
#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn fourteen_independent_steps_run_together_on_one_cluster_with_14_slots_on_emr_moto() {
    let emr = Emr::new("slots");
    let settings = emr.home.read("flow.toml");
    emr.home.write(
        "flow.toml",
        &settings.replace(
            "[cluster.emr.poll]",
            "step_concurrency_level = 14\n\n[cluster.emr.poll]",
        ),
    );
    let steps: String = (0..14)
        .map(|i| {
            format!(
                "\n[[steps]]\nname = \"s{i}\"\nmain = {{ action = \"spark\", application = \"s3://jobs/s{i}.py\" }}\n"
            )
        })
        .collect();
    emr.home.write(
        "wide.toml",
        &format!("name = \"emr_wide\"\ntime_qualifier = \"daily\"\n{steps}"),
    );
    let driver = Driver::start(&emr.moto, &emr.name);
    let mut engine = emr.spawn(&["run", "wide.toml", "--timeperiod", TP]);
    let cid = emr.wait_for_running_step();
    let deadline = Instant::now() + Duration::from_secs(60);
    while emr.moto.steps(&cid).len() < 14 {
        assert!(
            Instant::now() < deadline,
            "the steps were not added together: {} of 14",
            emr.moto.steps(&cid).len()
        );
        assert!(engine.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        emr.moto
            .steps(&cid)
            .iter()
            .all(|s| s["state"] == "RUNNING" || s["state"] == "PENDING"),
        "none ended before all were added"
    );
    driver.set(Mode::Complete);
    let code = engine.wait().unwrap().code();
    drop(driver);
    assert_eq!(code, Some(0));
    assert_eq!(emr.clusters().len(), 1);
    assert_eq!(emr.moto.count(&cid, "AddJobFlowSteps"), 14);
    let status = emr.home.status_json("emr_wide", TP);
    assert_eq!(status["flow"]["state"], "state_processed", "{status}");
}

#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn terminate_orphans_ends_the_cluster_of_a_crashed_run_on_emr_moto() {
    let emr = Emr::new("orphan");
    let _driver = Driver::start(&emr.moto, &emr.name);
    let cid = emr.kill_long_run_mid_step();
    assert_eq!(emr.clusters(), [(cid.clone(), "RUNNING".to_string())]);
    // Once the dead run's lease is stale, the orphan is found and ended.
    emr.terminate_orphans_until_terminated(true);
    assert_eq!(emr.moto.count(&cid, "TerminateJobFlows"), 1);
    let out = emr.home.flow(&["clusters", "--json"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("terminated"),
        "{}",
        text(&out)
    );
}

#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn a_refused_terminate_is_logged_and_recorded_on_emr_moto() {
    let emr = Emr::new("refused");
    let driver = Driver::start(&emr.moto, &emr.name);
    let (mut engine, cid) = emr.start_long_run();
    // EMR refuses to end this cluster (only this one: other tests share moto).
    emr.moto.fail(
        "TerminateJobFlows",
        1,
        Some(&cid),
        "AccessDeniedException",
        "not authorized to perform elasticmapreduce:TerminateJobFlows (flow test)",
    );
    driver.set(Mode::Complete);
    let code = engine.wait().unwrap().code();
    drop(driver);
    assert_eq!(emr.moto.count(&cid, "TerminateJobFlows"), 1);
    let clusters = emr.clusters();
    assert!(
        clusters.len() == 1 && ["RUNNING", "WAITING"].contains(&clusters[0].1.as_str()),
        "the refused request had no effect: {clusters:?}"
    );
    let status = emr.home.status_json("emr_long", TP);
    assert_eq!(status["flow"]["state"], "state_processed", "{status}");
    // Reported, not swallowed: exit 4 (steps done, a cluster left up), in
    // the run's log and in the cluster record.
    assert_eq!(code, Some(4), "a run that left a cluster up exits 4");
    let flow_log = emr.home.read("logs/emr_long/emr_long.log");
    assert!(
        flow_log.contains("terminate failed")
            && flow_log.contains(&format!("TerminateJobFlows {cid}"))
            && flow_log.contains("AccessDeniedException"),
        "exit {code:?}: {flow_log}"
    );
    let out = emr.home.flow(&["clusters", "--json"]);
    let records = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        records.contains("terminate_failed") && records.contains("AccessDeniedException"),
        "{records}"
    );
    // The record lets `flow clusters --terminate-orphans` finish the job.
    emr.terminate_orphans_until_terminated(false);
}

/// `flow ARGS` until the killed run's lease is stale enough for it to be
/// accepted; its output. Each attempt must end within a minute: a run that
/// started a step behind the dead run's held one would wait forever.
fn until_accepted(emr: &Emr, args: &[&str]) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut child = emr
            .home
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let ends = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > ends {
                kill9(&mut child);
                panic!("flow {args:?} did not end within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let refused = out.status.code() == Some(2)
            && String::from_utf8_lossy(&out.stderr).contains("already being run by");
        if !refused {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "flow {args:?} never accepted: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// No job twice through `run`: a fresh run after `kill -9` first stops
/// the step the dead run left on EMR. While that step cannot be cancelled
/// the run starts nothing (no step added, no cluster launched) and fails
/// naming it; once it can, the old step ends CANCELLED and the new run's
/// one step completes.
#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn run_stops_the_step_of_a_killed_engine_before_starting_anything_on_emr_moto() {
    let emr = Emr::new("rerun");
    let driver = Driver::start(&emr.moto, &emr.name);
    let cid = emr.kill_long_run_mid_step();
    let old_step = emr.moto.steps(&cid)[0]["id"].as_str().unwrap().to_string();

    emr.moto.fail(
        "CancelSteps",
        1,
        Some(&cid),
        "ValidationException",
        "Step cannot be cancelled",
    );
    let refused = until_accepted(&emr, &["run", "long.toml", "--timeperiod", TP]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains(&old_step),
        "the refusal names the step left running: {}",
        text(&refused)
    );
    assert_eq!(emr.moto.count(&cid, "CancelSteps"), 1);
    assert_eq!(
        emr.moto.count(&cid, "AddJobFlowSteps"),
        1,
        "nothing was added while the old step could not be stopped"
    );
    assert_eq!(emr.clusters().len(), 1, "no cluster was launched");
    assert_eq!(emr.moto.steps(&cid)[0]["state"], "RUNNING");

    // Steps added to any of the test's clusters (the new run may reuse the
    // dead run's cluster or launch its own).
    let added = || -> u64 {
        emr.clusters()
            .iter()
            .map(|(id, _)| emr.moto.count(id, "AddJobFlowSteps"))
            .sum()
    };
    let rerun = std::thread::scope(|scope| {
        let rerun = scope.spawn(|| until_accepted(&emr, &["run", "long.toml", "--timeperiod", TP]));
        // The new run's step is added only after the old one ended.
        let deadline = Instant::now() + Duration::from_secs(120);
        while added() < 2 && !rerun.is_finished() {
            assert!(Instant::now() < deadline, "the new run added no step");
            std::thread::sleep(Duration::from_millis(20));
        }
        let steps = emr.moto.steps(&cid);
        let old = steps.iter().find(|s| s["id"] == old_step.as_str()).unwrap();
        assert_eq!(
            old["state"], "CANCELLED",
            "the old step had ended when the new one was added: {steps:?}"
        );
        driver.set(Mode::Complete);
        rerun.join().unwrap()
    });
    drop(driver);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert_eq!(added(), 2, "one step for the dead run, one for the new");
    let completed: usize = emr
        .clusters()
        .iter()
        .map(|(id, _)| {
            emr.moto
                .steps(id)
                .iter()
                .filter(|s| s["state"] == "COMPLETED")
                .count()
        })
        .sum();
    assert_eq!(completed, 1);
    let status = emr.home.status_json("emr_long", TP);
    assert_eq!(status["flow"]["state"], "state_processed", "{status}");
}

/// Waits until `cid` has `n` steps that are RUNNING or PENDING.
fn wait_for_steps(emr: &Emr, cid: &str, n: usize) -> Vec<String> {
    wait_until(&format!("{n} live steps on {cid}"), || {
        let live: Vec<String> = emr
            .moto
            .steps(cid)
            .iter()
            .filter(|s| s["state"] == "RUNNING" || s["state"] == "PENDING")
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        (live.len() >= n).then_some(live)
    })
}

#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn two_overlapping_runs_share_one_cluster_terminated_once_after_the_last_on_emr_moto() {
    let emr = Emr::new("shared");
    let (mut first, cid) = emr.start_long_run(); // timeperiod 2026112800
    let first_step = emr.moto.steps(&cid)[0]["id"].as_str().unwrap().to_string();
    let mut second = emr.spawn(&["run", "long.toml", "--timeperiod", "2026112900"]);
    // The second run joins the first one's cluster (reuse by name).
    let steps = wait_for_steps(&emr, &cid, 2);
    assert_eq!(emr.clusters().len(), 1, "one cluster for both runs");
    // The first run ends while the second one's step still runs.
    emr.moto.set_step(&cid, &first_step, "COMPLETED");
    assert_eq!(first.wait().unwrap().code(), Some(0));
    let clusters = emr.clusters();
    assert!(
        clusters.len() == 1 && ["RUNNING", "WAITING"].contains(&clusters[0].1.as_str()),
        "the first run left the cluster up for the second: {clusters:?}"
    );
    assert_eq!(emr.moto.count(&cid, "TerminateJobFlows"), 0);
    let other = steps.iter().find(|s| **s != first_step).unwrap();
    emr.moto.set_step(&cid, other, "COMPLETED");
    assert_eq!(second.wait().unwrap().code(), Some(0));
    emr.home
        .assert_processed("emr_long", &["2026112800".into(), "2026112900".into()]);
    assert_eq!(emr.clusters(), [(cid.clone(), "TERMINATED".to_string())]);
    assert_eq!(
        emr.moto.count(&cid, "TerminateJobFlows"),
        1,
        "terminated once, by the last run"
    );
    let out = emr.home.flow(&["clusters", "--json"]);
    let records = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        records.contains("left_up") && records.contains("other run(s) still using it"),
        "{records}"
    );
}

#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn twelve_concurrent_runs_launch_one_cluster_on_emr_moto() {
    let emr = Emr::new("twelve");
    emr.home.write("long.toml", LONG);
    let driver = Driver::start(&emr.moto, &emr.name);
    let days = days(12);
    let runs = emr.home.spawn_runs("long.toml", &days);
    // Every run's step is held until all twelve runs have one: they all
    // overlap, whatever the machine's load.
    wait_until("12 steps added", || {
        let steps: usize = emr
            .clusters()
            .iter()
            .map(|(id, _)| emr.moto.steps(id).len())
            .sum();
        (steps == 12).then_some(())
    });
    driver.set(Mode::Complete);
    let codes = exit_codes(runs);
    drop(driver);
    assert_eq!(codes, vec![Some(0); 12]);
    emr.home.assert_processed("emr_long", &days);
    let clusters = emr.clusters();
    assert_eq!(clusters.len(), 1, "twelve runs, one launch: {clusters:?}");
    let cid = &clusters[0].0;
    assert_eq!(clusters[0].1, "TERMINATED");
    assert_eq!(emr.moto.count(cid, "TerminateJobFlows"), 1);
    assert_eq!(emr.moto.steps(cid).len(), 12, "every run's step ran there");
}

#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn terminate_orphans_closes_the_steps_it_ended_so_one_recover_completes_on_emr_moto() {
    let emr = Emr::new("orphan-steps");
    let cid = emr.kill_long_run_mid_step();
    emr.terminate_orphans_until_terminated(true);
    let status = emr.home.status_json("emr_long", TP);
    assert_eq!(
        step_states(&status),
        [("compute".to_string(), "state_invalid".to_string())],
        "{status}"
    );
    assert!(
        status.to_string().contains("--terminate-orphans"),
        "the step says why: {status}"
    );
    // One recover runs the step again on a new cluster (the old step,
    // still RUNNING in moto's eyes, is left alone).
    let mut recover = emr.spawn(&["recover", "long.toml", "--timeperiod", TP]);
    let deadline = Instant::now() + Duration::from_secs(60);
    'step: loop {
        if let Some(code) = recover.try_wait().unwrap() {
            panic!("recover ended ({code}) before running the step again");
        }
        for (id, _) in emr.clusters().iter().filter(|(id, _)| *id != cid) {
            if let Some(step) = emr.moto.steps(id).iter().find(|s| s["state"] == "RUNNING") {
                emr.moto
                    .set_step(id, step["id"].as_str().unwrap(), "COMPLETED");
                break 'step;
            }
        }
        assert!(
            Instant::now() < deadline,
            "recover never ran the step again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        recover.wait().unwrap().code(),
        Some(0),
        "one recover completes it"
    );
    let status = emr.home.status_json("emr_long", TP);
    assert_eq!(status["flow"]["state"], "state_processed", "{status}");
    assert_eq!(
        emr.moto.steps(&cid).len(),
        1,
        "nothing more on the ended cluster"
    );
}

#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn a_cluster_ending_under_a_step_fails_it_at_once_with_the_reason_and_recover_completes_on_emr_moto(
) {
    let emr = Emr::new("dies");
    let (mut engine, cid) = emr.start_long_run();
    emr.moto.set_cluster(
        &cid,
        "TERMINATED_WITH_ERRORS",
        "INSTANCE_FAILURE",
        "the master node was lost (flow test)",
    );
    // Noticed by the poller's cluster check (every tenth tick), or by the
    // step itself where EMR (the strict moto layer) interrupts it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = engine.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the engine never noticed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(1), "the flow failed");
    let status = emr.home.status_json("emr_long", TP);
    assert_eq!(
        step_states(&status),
        [("compute".to_string(), "state_invalid".to_string())]
    );
    let out = emr.home.flow(&["clusters"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("TERMINATED_WITH_ERRORS: INSTANCE_FAILURE"),
        "the cluster's record keeps its end reason: {}",
        text(&out)
    );
    let log = emr.home.read("logs/emr_long/compute.log");
    assert!(
        log.contains(&cid)
            && log.contains("INSTANCE_FAILURE: the master node was lost (flow test)"),
        "the step names its cluster and the cluster's reason: {log}"
    );

    // Recover launches a new cluster and completes.
    let driver = Driver::start(&emr.moto, &emr.name);
    driver.set(Mode::Complete);
    let out = emr.home.flow(&["recover", "long.toml", "--timeperiod", TP]);
    drop(driver);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = emr.home.status_json("emr_long", TP);
    assert_eq!(status["flow"]["state"], "state_processed", "{status}");
    let mut states: Vec<String> = emr.clusters().into_iter().map(|(_, s)| s).collect();
    states.sort();
    assert_eq!(
        states,
        ["TERMINATED", "TERMINATED_WITH_ERRORS"],
        "a new cluster ran the step and was terminated"
    );
}

/// `AddJobFlowSteps` throttled past every retry: the step's error is EMR's
/// code and message, what flow was doing and how often it tried, not the
/// SDK's debug text of the answer (headers, `SdkBody`, `Extensions`), in
/// the store, the step log and the binary's output.
#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn a_throttled_add_job_flow_steps_fails_the_step_with_emrs_code_and_message_on_emr_moto() {
    let emr = Emr::new("throttled");
    emr.home.write("long.toml", LONG);
    let cluster = format!("{}-0", emr.name);
    emr.moto
        .throttle("AddJobFlowSteps", 1_000_000, Some(&cluster));
    let out = emr.home.flow(&["run", "long.toml", "--timeperiod", TP]);
    emr.moto.heal(Some(&cluster));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let status = emr.home.status_json("emr_long", TP);
    let error = status["steps"][0]["error"].as_str().unwrap_or_default();
    let (cid, _) = &emr.clusters()[0];
    assert!(
        error.contains(&format!(
            "AddJobFlowSteps on EMR cluster {cid}: ThrottlingException: Rate exceeded (flow test) (after 6 attempts)"
        )),
        "{error}"
    );
    let log = emr.home.read("logs/emr_long/compute.log");
    let output = text(&out);
    for (what, said) in [
        ("error", error),
        ("step log", log.as_str()),
        ("output", &output),
    ] {
        for dump in [
            "SdkBody",
            "Extensions",
            "headers",
            "ServiceError",
            "ErrorMetadata",
        ] {
            assert!(!said.contains(dump), "{what} holds {dump}: {said}");
        }
    }
    assert!(error.len() < 300, "{} bytes: {error}", error.len());
}

/// `RunJobFlow` throttled past every retry (flow's and the engine's launch
/// retries): the run's error is EMR's code and message with the call, the
/// cluster's name and how often it was tried.
#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn a_throttled_run_job_flow_fails_the_run_with_emrs_code_and_message_on_emr_moto() {
    let emr = Emr::new("throttledlaunch");
    emr.home.write("long.toml", LONG);
    let cluster = format!("{}-0", emr.name);
    emr.moto.throttle("RunJobFlow", 1_000_000, Some(&cluster));
    let out = emr.home.flow(&["run", "long.toml", "--timeperiod", TP]);
    emr.moto.heal(Some(&cluster));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(emr.clusters().is_empty(), "{:?}", emr.clusters());
    let runs = emr.home.flow(&["history", "long.toml", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let error = runs[0]["error"].as_str().unwrap_or_default();
    assert_eq!(
        error,
        format!(
            "none of 1 cluster(s) launched: cluster 'emr-0' failed to launch: RunJobFlow of EMR cluster {cluster}: ThrottlingException: Rate exceeded (flow test) (after 6 attempts)"
        ),
        "{runs}"
    );
    let output = text(&out);
    for dump in [
        "SdkBody",
        "Extensions",
        "headers",
        "ServiceError",
        "ErrorMetadata",
    ] {
        assert!(!output.contains(dump), "the output holds {dump}: {output}");
    }
}

/// A cluster that ends while launching (a failed bootstrap action): its
/// record keeps EMR's reason, and the run's error says it.
#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn a_failed_launch_keeps_emrs_reason_on_the_cluster_record_and_in_the_run_error_on_emr_moto() {
    let emr = Emr::new("bootfail");
    emr.home.write("long.toml", LONG);
    let reason = "On the master instance (i-0123456789abcdef0), bootstrap action 1 returned a non-zero return code";
    emr.moto
        .launch_failure(&format!("{}-0", emr.name), "BOOTSTRAP_FAILURE", reason);
    let out = emr.home.flow(&["run", "long.toml", "--timeperiod", TP]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    let (cid, state) = &emr.clusters()[0];
    assert_eq!(state, "TERMINATED_WITH_ERRORS");
    assert!(
        all.contains("none of 1 cluster(s) launched: ")
            && all.contains(&format!(
                "EMR cluster {cid} became TERMINATED_WITH_ERRORS while launching: BOOTSTRAP_FAILURE: {reason}"
            )),
        "{all}"
    );
    assert!(
        !all.contains("may still be up"),
        "the cluster ended, nothing is left to terminate: {all}"
    );
    let runs = emr.home.flow(&["history", "long.toml", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let run_error = runs[0]["error"].as_str().unwrap_or_default();
    assert!(
        run_error.contains(&format!("BOOTSTRAP_FAILURE: {reason}")),
        "{runs}"
    );
    let records = emr.home.flow(&["clusters", "--json"]);
    let records: serde_json::Value = serde_json::from_slice(&records.stdout).unwrap();
    assert_eq!(records[0]["state"], "launch_failed", "{records}");
    assert_eq!(
        records[0]["message"],
        format!("TERMINATED_WITH_ERRORS: BOOTSTRAP_FAILURE: {reason}"),
        "{records}"
    );
}

/// A run's instance-hours are its cluster's instance groups × the time its
/// record covers, and its cost those × the `[cost]` prices per market; the
/// `NormalizedInstanceHours` EMR reports at termination is kept beside them.
/// Shown by `flow status --json`, `flow history` and the run's summary line.
#[test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
fn a_runs_instance_hours_and_cost_are_its_groups_times_its_time_times_prices_on_emr_moto() {
    let emr = Emr::new("cost");
    let settings = emr
        .home
        .read("flow.toml")
        .replace(
            r#"instance_groups = [{ role = "MASTER", instance_type = "m5.xlarge", count = 1 }]"#,
            r#"instance_groups = [{ role = "MASTER", instance_type = "m5.xlarge", count = 1 }, { role = "CORE", instance_type = "r5.2xlarge", count = 2, market = "SPOT" }]"#,
        );
    emr.home.write(
        "flow.toml",
        &format!(
            "{settings}\n[cost]\ncurrency = \"USD\"\n\n[cost.prices]\n\"m5.xlarge\" = 0.192\n\"r5.2xlarge:spot\" = 0.11\n\"r5.2xlarge\" = 0.504\n"
        ),
    );
    emr.home.write("long.toml", LONG);
    let driver = Driver::start(&emr.moto, &emr.name);
    let run = emr
        .home
        .command(&["run", "long.toml", "--timeperiod", TP])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cluster_id = emr.wait_for_running_step();
    emr.moto.set_normalized_instance_hours(&cluster_id, 24);
    driver.set(Mode::Complete);
    let out = run.wait_with_output().unwrap();
    drop(driver);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let status = emr.home.status_json("emr_long", TP);
    let clusters = status["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1, "{status}");
    let cluster = &clusters[0];
    assert_eq!(cluster["handle"]["backend_id"], cluster_id.as_str());
    assert_eq!(
        cluster["usage"]["instances"],
        json!([
            {"role": "MASTER", "instance_type": "m5.xlarge", "market": "on_demand", "count": 1},
            {"role": "CORE", "instance_type": "r5.2xlarge", "market": "spot", "count": 2},
        ])
    );
    assert_eq!(cluster["usage"]["normalized_instance_hours"], 24.0);
    let hours = support::cost::billed_hours(cluster);
    let run_id = cluster["run"].as_str().unwrap();
    let usage = &status["usage"]["runs"][run_id];
    support::cost::assert_close(&usage["instance_hours"], 3.0 * hours, "instance-hours");
    support::cost::assert_lines(
        &usage["by_instance"],
        &[
            ("m5.xlarge", "on_demand", hours),
            ("r5.2xlarge", "spot", 2.0 * hours),
        ],
    );
    // Spot instances at the spot price, not the on-demand one.
    support::cost::assert_close(
        &usage["cost"]["amount"],
        0.192 * hours + 0.11 * 2.0 * hours,
        "cost",
    );
    assert_eq!(usage["cost"]["currency"], "USD");
    assert_eq!(usage["cost"]["unpriced"], json!([]));
    assert_eq!(usage["normalized_instance_hours"], 24.0);
    assert_eq!(
        status["usage"]["flow"], *usage,
        "one run: the flow's is the run's"
    );

    let summary = String::from_utf8_lossy(&out.stdout);
    let first = summary.lines().next().unwrap();
    assert!(
        first.starts_with("flow emr_long [2026112800]: state_processed, ")
            && first.contains(" instance-hours, ~$"),
        "the summary line says what the run used: {summary}"
    );
    let history = emr.home.expect(0, &["history", "emr_long", "--json"]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(history[0]["usage"], *usage, "{history}");
}
