//! The binary's flags of the ARM fake: `contract-fakes arm [--port N]
//! [--tenant T] [--client-id ID] [--client-secret S] [--create-for D]
//! [--delete-for D] [--retry-after SECONDS]`, on real time (defaults:
//! [`ArmOptions::new`](super::ArmOptions::new)'s, with creates of 2s and
//! deletes of 1s).

use super::ArmOptions;
use flow_cloud::TokioClock;
use std::sync::Arc;
use std::time::Duration;

/// Parses the flags after the API's name: the options and the port.
pub fn parse(args: Vec<String>) -> Result<(ArmOptions, u16), String> {
    let mut options = ArmOptions::new(Arc::new(TokioClock::new()));
    options.create_for = Duration::from_secs(2);
    options.delete_for = Duration::from_secs(1);
    options.retry_after = 1;
    let mut port = 0;
    let mut args = args.into_iter();
    let duration = |flag: &str, value: &str| {
        humantime::parse_duration(value).map_err(|e| format!("{flag} {value}: {e}"))
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = value.parse().map_err(|_| "--port needs a number")?,
            "--tenant" => options.tenant = value,
            "--client-id" => options.client_id = value,
            "--client-secret" => options.client_secret = value,
            "--create-for" => options.create_for = duration(&flag, &value)?,
            "--delete-for" => options.delete_for = duration(&flag, &value)?,
            "--retry-after" => {
                options.retry_after = value.parse().map_err(|_| "--retry-after needs seconds")?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((options, port))
}
