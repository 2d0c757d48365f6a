//! fake-gcs-server, where Dataproc would find job files and write driver
//! output.

use super::Service;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// `gs://bucket/name` → (bucket, name).
pub(super) fn split_gs(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix("gs://")?.split_once('/')
}

pub(super) async fn gcs_exists(shared: &Service, uri: &str) -> bool {
    let (Some(gcs), Some((bucket, name))) = (&shared.options.gcs_endpoint, split_gs(uri)) else {
        return false;
    };
    let url = format!(
        "{gcs}/storage/v1/b/{}/o/{}",
        utf8_percent_encode(bucket, NON_ALPHANUMERIC),
        utf8_percent_encode(name, NON_ALPHANUMERIC)
    );
    matches!(shared.http.get(url).send().await, Ok(r) if r.status().is_success())
}

pub(super) async fn gcs_write(shared: &Service, uri: &str, text: String) {
    let (Some(gcs), Some((bucket, name))) = (&shared.options.gcs_endpoint, split_gs(uri)) else {
        return;
    };
    let url = format!(
        "{gcs}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
        utf8_percent_encode(bucket, NON_ALPHANUMERIC),
        utf8_percent_encode(name, NON_ALPHANUMERIC)
    );
    let _ = shared.http.post(url).body(text).send().await;
}
