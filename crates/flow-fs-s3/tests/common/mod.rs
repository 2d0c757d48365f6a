//! What the moto tests share: the endpoint `cargo xtask test` started, and
//! a fresh bucket per test.

#![allow(dead_code)]

use flow_fs_s3::{S3Filesystem, S3FilesystemBuilder};

pub const MIB: u64 = 1024 * 1024;

/// moto's address. These tests are `#[ignore]`d; xtask includes them only
/// when moto is up, so a missing endpoint here is a harness error.
pub fn endpoint() -> String {
    std::env::var("FLOW_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("FLOW_TEST_S3_ENDPOINT is not set: run the moto tests through `cargo xtask test`, which starts moto")
    })
}

/// A builder pointed at moto with a bucket of its own (created here).
pub async fn moto(
    test: &str,
    configure: impl FnOnce(S3FilesystemBuilder) -> S3FilesystemBuilder,
) -> S3Filesystem {
    let bucket = bucket_name(test);
    let builder = S3FilesystemBuilder::new()
        .with_endpoint(endpoint())
        .with_force_path_style(true)
        .with_region("us-east-1")
        .with_bucket(&bucket);
    let fs = configure(builder)
        .build()
        .await
        .expect("the S3 filesystem builds");
    create_bucket(&fs, &bucket).await;
    fs
}

pub fn bucket_name(test: &str) -> String {
    let name: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("flow-{name}-{}", std::process::id())
}

pub async fn create_bucket(fs: &S3Filesystem, bucket: &str) {
    if let Err(e) = fs.client().create_bucket().bucket(bucket).send().await {
        let text = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
        assert!(
            text.contains("BucketAlreadyOwnedByYou"),
            "create_bucket {bucket}: {text}"
        );
    }
}

/// Every key of the bucket under `prefix`, sorted.
pub async fn keys(fs: &S3Filesystem, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = fs
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list");
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    keys.sort();
    keys
}

/// Deterministic bytes that do not repeat with any small period.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}
