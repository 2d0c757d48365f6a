//! The binary's Qubole flags: `contract-fakes qubole [--port N] --token T
//! [--cluster LABEL=UP|DOWN]... [--command-waiting D] [--command-run
//! D|forever] [--command-cancel D] [--cluster-start D] [--cluster-stop D]`,
//! on real time with short durations by default.

use super::FakeOptions;
use flow_cloud::TokioClock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn duration(flag: &str, value: Option<String>) -> Result<Duration, String> {
    let value = value.ok_or(format!("{flag} needs a value"))?;
    humantime::parse_duration(&value).map_err(|e| format!("{flag} {value}: {e}"))
}

/// The options and the port (`0`: a free one).
pub fn parse(args: Vec<String>) -> Result<(FakeOptions, u16), String> {
    let mut options = FakeOptions::new(Arc::new(TokioClock::new()), "", "");
    options.clusters = BTreeMap::new();
    options.command_waiting = Duration::from_millis(100);
    options.command_run = Some(Duration::from_secs(1));
    options.command_cancel = Duration::from_millis(200);
    options.cluster_start = Duration::from_millis(500);
    options.cluster_stop = Duration::from_millis(200);
    let mut port = 0;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("--port needs a number")?
            }
            "--token" => options.token = args.next().ok_or("--token needs a value")?,
            "--cluster" => {
                let value = args.next().ok_or("--cluster needs LABEL=UP|DOWN")?;
                match value.split_once('=') {
                    Some((label, state @ ("UP" | "DOWN"))) if !label.is_empty() => {
                        options.clusters.insert(label.into(), state.into());
                    }
                    _ => return Err(format!("--cluster {value}: write LABEL=UP or LABEL=DOWN")),
                }
            }
            "--command-waiting" => options.command_waiting = duration(&flag, args.next())?,
            "--command-run" => {
                let value = args.next();
                options.command_run = match value.as_deref() {
                    Some("forever") => None,
                    _ => Some(duration(&flag, value)?),
                }
            }
            "--command-cancel" => options.command_cancel = duration(&flag, args.next())?,
            "--cluster-start" => options.cluster_start = duration(&flag, args.next())?,
            "--cluster-stop" => options.cluster_stop = duration(&flag, args.next())?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.token.is_empty() {
        return Err("--token is required (the account's API token)".into());
    }
    if options.clusters.is_empty() {
        return Err("at least one --cluster LABEL=UP|DOWN is required".into());
    }
    Ok((options, port))
}
