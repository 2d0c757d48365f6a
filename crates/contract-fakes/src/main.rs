//! `contract-fakes API [--port N] [API flags]`: serves one API's contract
//! fake on 127.0.0.1 in real time, prints `listening on
//! http://127.0.0.1:PORT` on stdout, and exits when its standard input
//! closes (so it never outlives the test that started it). For end-to-end
//! tests, where the fake must outlive a killed engine. APIs: `arm`
//! (flags: `src/arm/args.rs`), `dataproc`
//! (flags: `src/dataproc/args.rs`), `qubole` (`src/qubole/args.rs`), `livy`
//! and `webhcat` (`src/gateway_args.rs`).

use contract_fakes::{arm, dataproc, gateway_args, livy, qubole, server, webhcat};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let api = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let served = match api.as_str() {
        "dataproc" => match dataproc::args::parse(rest) {
            Ok(args) => match dataproc::FakeDataproc::start(args.options, args.port).await {
                Ok(fake) => match &args.key_file {
                    Some(path) => fake
                        .write_key_file(path)
                        .map(|()| Box::new(fake) as Box<dyn Fake>),
                    None => Ok(Box::new(fake) as Box<dyn Fake>),
                },
                Err(e) => Err(e),
            },
            Err(e) => usage(&e),
        },
        "arm" => match arm::args::parse(rest) {
            Ok((options, port)) => arm::FakeArm::start(options, port)
                .await
                .map(|fake| Box::new(fake) as Box<dyn Fake>),
            Err(e) => usage(&e),
        },
        "qubole" => match qubole::args::parse(rest) {
            Ok((options, port)) => qubole::FakeQubole::start(options, port)
                .await
                .map(|fake| Box::new(fake) as Box<dyn Fake>),
            Err(e) => usage(&e),
        },
        "livy" => match gateway_args::parse(rest) {
            Ok(args) => {
                let login = args.login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
                livy::FakeLivy::start_with(login, Some((args.clock, args.run_for)), args.port)
                    .await
                    .map(|fake| Box::new(fake) as Box<dyn Fake>)
            }
            Err(e) => usage(&e),
        },
        "webhcat" => match gateway_args::parse(rest) {
            Ok(args) => {
                let storage = args.storage.as_deref().map(|endpoint| {
                    cluster_storage(endpoint).unwrap_or_else(|e| usage(&format!("--storage: {e}")))
                });
                webhcat::FakeWebHcat::start(
                    webhcat::WebHcatOptions {
                        run_for: Some(args.run_for),
                        fail_scripts: args.fail_scripts,
                        storage,
                        ..webhcat::WebHcatOptions::new(args.clock, args.login)
                    },
                    args.port,
                )
                .await
                .map(|fake| Box::new(fake) as Box<dyn Fake>)
            }
            Err(e) => usage(&e),
        },
        other => usage(&format!(
            "unknown API {other:?} (APIs: arm, dataproc, qubole, livy, webhcat)"
        )),
    };
    match served {
        Ok(fake) => server::until_stdin_closes(fake.url()).await,
        Err(e) => {
            eprintln!("contract-fakes: cannot start: {e}");
            std::process::exit(1);
        }
    }
}

/// The HDInsight cluster's Blob storage at `endpoint`
/// (`http://HOST:PORT/ACCOUNT`, an emulator), its key read from
/// `CONTRACT_FAKES_STORAGE_KEY`.
#[cfg(feature = "blob")]
fn cluster_storage(endpoint: &str) -> Result<std::sync::Arc<dyn flow_core::Filesystem>, String> {
    let account = endpoint
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let key = std::env::var("CONTRACT_FAKES_STORAGE_KEY")
        .map_err(|_| "CONTRACT_FAKES_STORAGE_KEY is not set".to_string())?;
    let fs = flow_fs_azure::AzureBlobFilesystemBuilder::new()
        .with_endpoint(endpoint)
        .with_account(account)
        .with_credential(flow_fs_azure::AzureCredential::Key(flow_core::Secret::new(
            key,
        )))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(std::sync::Arc::new(fs))
}

#[cfg(not(feature = "blob"))]
fn cluster_storage(_endpoint: &str) -> Result<std::sync::Arc<dyn flow_core::Filesystem>, String> {
    Err("this binary was built without the blob feature (cargo build -p contract-fakes --features blob)".into())
}

/// What the binary needs of a started fake.
trait Fake {
    fn url(&self) -> &str;
}

impl Fake for dataproc::FakeDataproc {
    fn url(&self) -> &str {
        dataproc::FakeDataproc::url(self)
    }
}

impl Fake for arm::FakeArm {
    fn url(&self) -> &str {
        arm::FakeArm::url(self)
    }
}

impl Fake for qubole::FakeQubole {
    fn url(&self) -> &str {
        qubole::FakeQubole::url(self)
    }
}

impl Fake for livy::FakeLivy {
    fn url(&self) -> &str {
        livy::FakeLivy::url(self)
    }
}

impl Fake for webhcat::FakeWebHcat {
    fn url(&self) -> &str {
        webhcat::FakeWebHcat::url(self)
    }
}

fn usage(message: &str) -> ! {
    eprintln!("contract-fakes: {message}\nusage: contract-fakes API [--port N] [API flags]");
    std::process::exit(2);
}
