//! The binary's flags of the HDInsight gateway's fakes (`livy`, `webhcat`):
//! `contract-fakes livy|webhcat [--port N] [--login USER:PASSWORD]
//! [--run-for D] [--fail-scripts TEXT] [--storage BLOB_ENDPOINT]`, on real
//! time. `--run-for`: every job ends that long after it was submitted
//! (default 2s), successfully unless it is a Pig script whose address
//! contains `--fail-scripts` (WebHCat only). `--storage`: the cluster's
//! Blob storage (an emulator's endpoint with its account, the key read from
//! `CONTRACT_FAKES_STORAGE_KEY`), where the WebHCat fake writes each job's
//! `statusdir/stderr` (needs the `blob` feature).

use flow_cloud::{Clock, TokioClock};
use std::sync::Arc;
use std::time::Duration;

/// The parsed flags.
#[derive(Debug)]
pub struct GatewayArgs {
    /// `0`: a free port.
    pub port: u16,
    /// The gateway's HTTP basic login, if one is asked.
    pub login: Option<(String, String)>,
    /// The service's clock (real time).
    pub clock: Arc<dyn Clock>,
    /// How long each job runs.
    pub run_for: Duration,
    /// Pig scripts whose address contains this fail.
    pub fail_scripts: Option<String>,
    /// The cluster's Blob endpoint (`http://127.0.0.1:PORT/ACCOUNT`).
    pub storage: Option<String>,
}

/// Parses the flags after the API's name.
pub fn parse(args: Vec<String>) -> Result<GatewayArgs, String> {
    let mut parsed = GatewayArgs {
        port: 0,
        login: None,
        clock: Arc::new(TokioClock::new()),
        run_for: Duration::from_secs(2),
        fail_scripts: None,
        storage: None,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => parsed.port = value.parse().map_err(|_| "--port needs a number")?,
            "--login" => match value.split_once(':') {
                Some((user, password)) if !user.is_empty() => {
                    parsed.login = Some((user.into(), password.into()))
                }
                _ => return Err("--login needs USER:PASSWORD".into()),
            },
            "--run-for" => {
                parsed.run_for = humantime::parse_duration(&value)
                    .map_err(|e| format!("--run-for {value}: {e}"))?
            }
            "--fail-scripts" => parsed.fail_scripts = Some(value),
            "--storage" => parsed.storage = Some(value),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(parsed)
}
