//! The binary's Dataproc flags: `contract-fakes dataproc [--port N]
//! [--gcs-endpoint URL] [--staging-bucket B] [--cluster-create D]
//! [--cluster-delete D] [--job-pending D] [--job-run D|forever]
//! [--job-cancel D] [--token-lifetime D] [--key-file PATH]`, on real time
//! with short durations by default. `--key-file` writes a service-account
//! key whose `token_uri` is the fake's token endpoint, for the client
//! under test.

use super::FakeOptions;
use flow_cloud::TokioClock;
use std::sync::Arc;
use std::time::Duration;

fn duration(flag: &str, value: Option<String>) -> Result<Duration, String> {
    let value = value.ok_or(format!("{flag} needs a value"))?;
    humantime::parse_duration(&value).map_err(|e| format!("{flag} {value}: {e}"))
}

/// What the command line asks for.
pub struct Args {
    pub options: FakeOptions,
    /// `0`: a free port.
    pub port: u16,
    pub key_file: Option<std::path::PathBuf>,
}

/// The options, the port and the key file to write.
pub fn parse(args: Vec<String>) -> Result<Args, String> {
    let mut options = FakeOptions::new(Arc::new(TokioClock::new()));
    options.cluster_create = Duration::from_millis(500);
    options.cluster_delete = Duration::from_millis(200);
    options.job_pending = Duration::from_millis(100);
    options.job_run = Some(Duration::from_secs(1));
    options.job_cancel = Duration::from_millis(200);
    let mut port = 0;
    let mut key_file = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("--port needs a number")?
            }
            "--gcs-endpoint" => {
                options.gcs_endpoint = Some(args.next().ok_or("--gcs-endpoint needs a URL")?)
            }
            "--staging-bucket" => {
                options.staging_bucket = args.next().ok_or("--staging-bucket needs a name")?
            }
            "--cluster-create" => options.cluster_create = duration(&flag, args.next())?,
            "--cluster-delete" => options.cluster_delete = duration(&flag, args.next())?,
            "--job-pending" => options.job_pending = duration(&flag, args.next())?,
            "--job-run" => {
                let value = args.next();
                options.job_run = match value.as_deref() {
                    Some("forever") => None,
                    _ => Some(duration(&flag, value)?),
                }
            }
            "--job-cancel" => options.job_cancel = duration(&flag, args.next())?,
            "--token-lifetime" => options.token_lifetime = duration(&flag, args.next())?,
            "--key-file" => key_file = Some(args.next().ok_or("--key-file needs a path")?.into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        options,
        port,
        key_file,
    })
}
