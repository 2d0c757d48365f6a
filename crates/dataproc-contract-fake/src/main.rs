//! `dataproc-contract-fake [--port N] [--gcs-endpoint URL] [--staging-bucket B]
//! [--cluster-create D] [--cluster-delete D] [--job-pending D] [--job-run D|forever]
//! [--job-cancel D]`: serves the contract fake on 127.0.0.1 in real time,
//! prints `listening on http://127.0.0.1:PORT` on stdout, and exits when its
//! standard input closes (so it never outlives the test that started it).
//! For end-to-end tests, where the fake must outlive a killed engine.

use dataproc_contract_fake::{FakeDataproc, FakeOptions};
use flow_cloud::TokioClock;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

fn duration(flag: &str, value: Option<String>) -> Result<Duration, String> {
    let value = value.ok_or(format!("{flag} needs a value"))?;
    humantime::parse_duration(&value).map_err(|e| format!("{flag} {value}: {e}"))
}

fn parse() -> Result<(FakeOptions, u16), String> {
    let mut options = FakeOptions::new(Arc::new(TokioClock::new()));
    options.cluster_create = Duration::from_millis(500);
    options.cluster_delete = Duration::from_millis(200);
    options.job_pending = Duration::from_millis(100);
    options.job_run = Some(Duration::from_secs(1));
    options.job_cancel = Duration::from_millis(200);
    let mut port = 0;
    let mut args = std::env::args().skip(1);
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
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((options, port))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (options, port) = match parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("dataproc-contract-fake: {e}");
            std::process::exit(2);
        }
    };
    let fake = match FakeDataproc::start(options, port).await {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("dataproc-contract-fake: cannot listen: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", fake.url());
    let _ = std::io::stdout().flush();
    let mut stdin = tokio::io::stdin();
    let mut buffer = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buffer).await {
        if n == 0 {
            break;
        }
    }
}
