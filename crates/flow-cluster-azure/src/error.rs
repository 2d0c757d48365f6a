//! [`AzureError`]: why an HDInsight cluster factory could not be made.

/// Why an [`AzureClusterFactory`](crate::AzureClusterFactory) could not be
/// built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    /// A setting is missing, out of range or malformed.
    #[error("[cluster.azure] setting `{field}`: {message}")]
    Invalid {
        /// The setting's name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A `[cluster.azure.blob]` setting is missing, out of range or
    /// malformed.
    #[error("[cluster.azure.blob] setting `{field}`: {message}")]
    InvalidBlob {
        /// The setting's name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A `[cluster.azure.arm]` setting is missing, out of range or
    /// malformed (`field` may be a place in `definition`).
    #[error("[cluster.azure.arm] setting `{field}`: {message}")]
    InvalidArm {
        /// The setting's name or place.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The Blob filesystem could not be made.
    #[error(transparent)]
    Blob(#[from] flow_fs_azure::AzureBlobError),
    /// The HTTP client could not be made.
    #[error("[cluster.azure]: cannot make the HTTP client: {message}")]
    Client {
        /// Why.
        message: String,
    },
}
