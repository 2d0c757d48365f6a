//! The standard per-service endpoint variables, `AWS_ENDPOINT_URL_EMR` and
//! `AWS_ENDPOINT_URL_S3`, with no endpoint in the settings: the EMR client
//! and the cluster's S3 filesystem reach moto through them. A test binary
//! of its own, because it changes the process environment.
//!
//! `#[ignore]`d: `cargo xtask test` runs it when moto is up.

#[path = "../../../tests/peers/moto_emr.rs"]
mod moto_emr;

use flow_cluster_emr::{EmrClusterBuilder, InstanceGroup, InstanceRole, Market};
use flow_core::Cluster;
use flow_fs_s3::S3Config;
use moto_emr::MotoEmr;
use std::time::Duration;

#[tokio::test]
#[ignore = "needs moto with the EMR layer: run through `cargo xtask test`"]
async fn aws_endpoint_url_emr_and_s3_reach_the_endpoint_on_emr_moto() {
    let moto = MotoEmr::from_env();
    // Only the per-service variables name moto: without them the SDK would
    // go to AWS's own endpoints (unreachable here) and fail.
    std::env::remove_var("AWS_ENDPOINT_URL");
    std::env::set_var("AWS_ENDPOINT_URL_EMR", &moto.endpoint);
    std::env::set_var("AWS_ENDPOINT_URL_S3", &moto.endpoint);
    let name = format!("t-env-endpoints-{}", std::process::id());
    moto.create_bucket(&name);
    let factory = EmrClusterBuilder::new()
        .with_name(&name)
        .with_region("us-east-1")
        .with_release_label("emr-7.5.0")
        .with_roles("EMR_DefaultRole", "EMR_EC2_DefaultRole")
        .with_instance_group(InstanceGroup {
            role: InstanceRole::Master,
            instance_type: "m5.xlarge".into(),
            count: 1,
            market: Market::OnDemand,
            bid_price: None,
            name: None,
        })
        .with_launch_poll(Duration::from_millis(20))
        .with_retry(flow_cloud::RetryConfig::never())
        .with_s3(S3Config {
            bucket: Some(name.clone()),
            // Path-style addressing is not an endpoint: moto on a loopback
            // address needs it.
            force_path_style: true,
            ..S3Config::default()
        })
        .build()
        .unwrap();
    assert_eq!(factory.config().endpoint, None);
    assert_eq!(factory.config().s3.endpoint, None);
    let cluster = factory.cluster("emr-0");
    let id = cluster.provision().await.unwrap().backend_id;
    cluster.wait_ready().await.unwrap();
    let launched: Vec<_> = moto
        .clusters_named(&name)
        .into_iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        launched,
        std::slice::from_ref(&id),
        "RunJobFlow reached moto"
    );
    cluster.filesystem().mkdir("through/env").await.unwrap();
    let objects = moto.objects(&name);
    assert!(
        objects.contains(&"through/env_$folder$".to_string()),
        "S3 reached moto: {objects:?}"
    );
    cluster.terminate().await.unwrap();
    assert_eq!(moto.count(&id, "TerminateJobFlows"), 1);
}
