//! The feature combinations of `flow-cli` that users build.
//!
//! * [`tree_problems`] (run by `cargo xtask test`, seconds, no compiling):
//!   `cargo tree` of each combination must hold none of the crates a
//!   feature left out brings (no AWS crate without `emr`, no GCP crate
//!   without `dataproc`, no Qubole crate without `qubole`, no Azure crate without `azure`, no shared cloud crate (`flow-cloud`,
//!   `flow-fs-object`) without a cloud, no MongoDB driver without `mongo`, no web server
//!   without `serve`, no OpenTelemetry crate without `otel`), and the
//!   whole workspace has one TLS stack (rustls with ring: no `aws-lc-rs`,
//!   no OpenSSL, no native-tls) and one HTTP client (a single `reqwest`
//!   version, no gRPC transport: the OTLP exporter uses the workspace's
//!   reqwest).
//! * `cargo xtask features` compiles each combination (`cargo check` into
//!   `<target>/features`, so the test build is not churned). Not part of
//!   `cargo xtask test`: a cold check of the cloud SDKs per combination
//!   costs minutes on two cores.

use std::env;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

/// A combination of `flow-cli` features as users build it.
struct Combination {
    /// Shown in messages and passed to `--features` (empty: none).
    features: &'static str,
    /// Crate-name prefixes that must not be in its dependency tree.
    absent: Vec<&'static str>,
}

const AWS: &[&str] = &["aws-", "flow-cluster-emr", "flow-fs-s3"];
const GCP: &[&str] = &["gcp_auth", "flow-cluster-dataproc", "flow-fs-gcs"];
const QUBOLE: &[&str] = &["flow-cluster-qubole"];
/// The EMR cluster alone: `qubole` brings the rest of [`AWS`] (S3).
const EMR: &[&str] = &["flow-cluster-emr"];
/// What every cloud shares (the lifecycle machinery, the object
/// filesystem): absent from a build without a cloud.
const CLOUD: &[&str] = &["flow-cloud", "flow-fs-object"];
/// The HDInsight cluster, the Blob filesystem and its SDK: only with
/// `azure`.
const AZURE: &[&str] = &["azure_", "flow-fs-azure", "flow-cluster-azure"];
const MONGO: &[&str] = &["mongodb", "bson", "flow-store-mongo"];
const SERVE: &[&str] = &["axum", "flow-server"];
/// Traces over OTLP (`otel`): the SDK, the exporter, the layer.
const OTEL: &[&str] = &["opentelemetry", "tracing-opentelemetry"];

/// Every combination checked. `--no-default-features` is implied, so
/// `"serve"` is the default build.
fn combinations() -> Vec<Combination> {
    let without = |groups: &[&[&'static str]]| groups.concat();
    vec![
        Combination {
            features: "",
            absent: without(&[AWS, GCP, QUBOLE, AZURE, CLOUD, MONGO, SERVE, OTEL]),
        },
        Combination {
            features: "serve",
            absent: without(&[AWS, GCP, QUBOLE, AZURE, CLOUD, MONGO, OTEL]),
        },
        Combination {
            features: "emr",
            absent: without(&[GCP, QUBOLE, AZURE, MONGO, SERVE, OTEL]),
        },
        Combination {
            features: "dataproc",
            absent: without(&[AWS, QUBOLE, AZURE, MONGO, SERVE, OTEL]),
        },
        Combination {
            features: "qubole",
            absent: without(&[EMR, GCP, AZURE, MONGO, SERVE, OTEL]),
        },
        Combination {
            features: "azure",
            absent: without(&[AWS, GCP, QUBOLE, MONGO, SERVE, OTEL]),
        },
        Combination {
            features: "mongo",
            absent: without(&[AWS, GCP, QUBOLE, AZURE, CLOUD, SERVE, OTEL]),
        },
        Combination {
            features: "otel",
            absent: without(&[AWS, GCP, QUBOLE, AZURE, CLOUD, MONGO, SERVE]),
        },
        Combination {
            features: "serve,emr,dataproc,qubole,mongo",
            absent: without(&[AZURE, OTEL]),
        },
        Combination {
            features: "serve,emr,dataproc,qubole,azure,mongo,otel",
            absent: Vec::new(),
        },
    ]
}

/// Crates of a second TLS stack, absent from every build.
const OTHER_TLS: &[&str] = &[
    "aws-lc-rs",
    "aws-lc-sys",
    "openssl",
    "openssl-sys",
    "native-tls",
];

/// Crates of a second HTTP stack, absent from every build: other clients,
/// and gRPC's transport (`hyper-timeout` comes with tonic's `channel`;
/// `otel` brings tonic for its message types only). `reqwest` may also
/// appear in one version only.
const OTHER_HTTP: &[&str] = &["ureq", "isahc", "surf", "hyper-timeout"];

fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn features_args(features: &str) -> Vec<String> {
    let mut args = vec!["--no-default-features".to_string()];
    if !features.is_empty() {
        args.push("--features".into());
        args.push(features.into());
    }
    args
}

fn shown(features: &str) -> String {
    if features.is_empty() {
        "--no-default-features".into()
    } else {
        format!("--no-default-features --features {features}")
    }
}

/// What is wrong with the dependency trees of the combinations, one line
/// each; empty when every combination holds only what it should.
pub fn tree_problems(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for combination in &combinations() {
        let output = cargo()
            .current_dir(root)
            .args(["tree", "--quiet", "-p", "flow-cli", "-e", "normal,build"])
            .args(["--prefix", "none", "--format", "{p}"])
            .args(features_args(combination.features))
            .output();
        let output = match output {
            Ok(output) if output.status.success() => output,
            Ok(output) => {
                problems.push(format!(
                    "cargo tree -p flow-cli {} failed: {}",
                    shown(combination.features),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!("cannot run cargo tree: {e}"));
                return problems;
            }
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let mut found: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| {
                combination.absent.iter().any(|p| name.starts_with(p))
                    || OTHER_TLS.contains(name)
                    || OTHER_HTTP.contains(name)
            })
            .collect();
        found.sort_unstable();
        found.dedup();
        let mut reqwests: Vec<&str> = text
            .lines()
            .filter(|line| line.split_whitespace().next() == Some("reqwest"))
            .filter_map(|line| line.split_whitespace().nth(1))
            .collect();
        reqwests.sort_unstable();
        reqwests.dedup();
        if reqwests.len() > 1 {
            problems.push(format!(
                "flow-cli {} depends on reqwest {} (one HTTP client: one version)",
                shown(combination.features),
                reqwests.join(", ")
            ));
        }
        if !found.is_empty() {
            problems.push(format!(
                "flow-cli {} depends on {} (left out by its features, or a second TLS or HTTP stack)",
                shown(combination.features),
                found.join(", ")
            ));
        }
    }
    problems
}

/// `cargo xtask features`: the tree checks, then `cargo check` of the
/// binary in each combination.
pub fn features(root: &Path, target: &Path) -> ExitCode {
    let problems = tree_problems(root);
    for problem in &problems {
        eprintln!("xtask: {problem}");
    }
    let mut failed = !problems.is_empty();
    if !failed {
        println!(
            "xtask: dependency trees of {} combinations hold only what their features bring",
            combinations().len()
        );
    }
    let check_target = target.join("features");
    for combination in &combinations() {
        let started = Instant::now();
        let status = cargo()
            .current_dir(root)
            .env("CARGO_TARGET_DIR", &check_target)
            .args(["check", "--quiet", "-p", "flow-cli", "--bins"])
            .args(features_args(combination.features))
            .status();
        let ok = status.as_ref().is_ok_and(|s| s.success());
        println!(
            "xtask: cargo check -p flow-cli {}: {} in {:.0} s",
            shown(combination.features),
            if ok { "ok" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        failed |= !ok;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
