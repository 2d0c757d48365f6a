//! What the Azurite tests share: the endpoint xtask started, a filesystem
//! on a container of its own, and the blob names of a container.
#![allow(dead_code)]

use flow_core::Secret;
use flow_fs_azure::flow_fs_object::{ObjectBackend, ObjectLocation};
use flow_fs_azure::{
    AzureBlobFilesystem, AzureBlobFilesystemBuilder, AzureCredential, EMULATOR_ACCOUNT,
};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;

/// Azurite's well-known development key (public, documented by Microsoft).
pub const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The Blob endpoint with the account, `http://127.0.0.1:PORT/devstoreaccount1`.
pub fn endpoint() -> String {
    std::env::var("FLOW_TEST_AZURITE_ENDPOINT").unwrap_or_else(|_| {
        panic!("FLOW_TEST_AZURITE_ENDPOINT is not set: run the Azurite tests through `cargo xtask test`, which starts it")
    })
}

/// A builder for Azurite's account with `key`.
pub fn builder_with_key(key: &str) -> AzureBlobFilesystemBuilder {
    AzureBlobFilesystemBuilder::new()
        .with_endpoint(endpoint())
        .with_account(EMULATOR_ACCOUNT)
        .with_credential(AzureCredential::Key(Secret::new(key)))
}

/// A filesystem on Azurite with a container of its own (created here).
pub async fn azurite(
    test: &str,
    configure: impl FnOnce(AzureBlobFilesystemBuilder) -> AzureBlobFilesystemBuilder,
) -> AzureBlobFilesystem {
    let container = format!("flow-{test}-{}", std::process::id());
    let fs = configure(builder_with_key(EMULATOR_KEY).with_container(&container))
        .build()
        .expect("the Blob filesystem builds");
    fs.create_container(&container)
        .await
        .expect("Azurite creates the container");
    fs
}

/// Every blob name of the filesystem's container under `prefix` (a plain
/// prefix; `""` for all), sorted, through the backend's paged listing.
pub async fn names(fs: &AzureBlobFilesystem, prefix: &str) -> Vec<String> {
    let at = ObjectLocation {
        scheme: "az",
        bucket: fs.config().container.clone().unwrap(),
        key: String::new(),
    };
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = fs
            .backend()
            .list_page("list", &at, prefix, token, 5000)
            .await
            .unwrap();
        names.extend(page.objects.into_iter().map(|o| o.key));
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    names.sort();
    names
}
