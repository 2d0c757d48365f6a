//! [`EmrClusterFactory`]: makes the [`EmrCluster`]s of a run, sharing
//! settings, AWS clients and step pollers.

use crate::client::{ClientError, EmrBackend};
use crate::cluster::{EmrCluster, KIND};
use crate::config::{ConfigError, EmrClusterBuilder, EmrConfig};
use flow_cloud::{Clock, TokioClock};
use flow_core::{Cluster, ClusterError, ClusterFactory, ExecutionContext};
use std::fmt;
use std::sync::Arc;

/// Makes [`EmrCluster`]s (kind `emr`) that share settings, AWS clients and
/// step pollers. Creating it makes no request.
#[derive(Clone)]
pub struct EmrClusterFactory {
    shared: Arc<EmrBackend>,
}

impl fmt::Debug for EmrClusterFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmrClusterFactory")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl EmrClusterFactory {
    /// Checks `config` and makes the factory (see [`EmrClusterBuilder`] for
    /// a clock of one's own).
    pub fn new(config: EmrConfig) -> Result<Self, ConfigError> {
        EmrClusterBuilder::new().with_config(config).build()
    }

    pub(crate) fn from_parts(config: EmrConfig, clock: Arc<dyn Clock>) -> Self {
        EmrClusterFactory {
            shared: Arc::new(EmrBackend::new(config, clock)),
        }
    }

    /// The settings it was built with.
    pub fn config(&self) -> &EmrConfig {
        &self.shared.config
    }

    /// A cluster called `name` in the run (`emr-0`); its EMR name is the
    /// configured name with the same index (`NAME-0`).
    pub fn cluster(&self, name: &str) -> EmrCluster {
        EmrCluster::new(
            name,
            emr_name(&self.shared.config.name, name),
            self.shared.clone(),
        )
    }

    /// Resolves credentials and region now (they are otherwise resolved on
    /// the first request) and returns the EMR client.
    pub async fn emr_client(&self) -> Result<aws_sdk_emr::Client, ClientError> {
        Ok(self.shared.clients().await?.emr.clone())
    }

    /// The S3 filesystem the clusters use.
    pub async fn s3(&self) -> Result<flow_fs_s3::S3Filesystem, ClientError> {
        Ok(self.shared.clients().await?.s3.clone())
    }

    /// `DescribeCluster` requests made while waiting for clusters to come
    /// up.
    pub fn launch_requests(&self) -> u64 {
        self.shared.lifecycle_requests.get()
    }

    /// `ListSteps` requests the step pollers made so far.
    pub fn poll_requests(&self) -> u64 {
        self.shared.poll_requests()
    }
}

impl ClusterFactory for EmrClusterFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn create(
        &self,
        name: &str,
        _context: &ExecutionContext,
    ) -> Result<Arc<dyn Cluster>, ClusterError> {
        Ok(Arc::new(self.cluster(name)))
    }
}

/// `NAME-N` for the run's cluster `KIND-N`; `NAME-RUNNAME` for other names.
fn emr_name(configured: &str, run_name: &str) -> String {
    flow_cloud::names::numbered_name(configured, run_name, str::to_string)
}

impl Default for EmrClusterFactory {
    /// The default settings (region and credentials from the AWS chain).
    fn default() -> Self {
        EmrClusterFactory::from_parts(EmrConfig::default(), Arc::new(TokioClock::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emr_names_follow_the_run_index() {
        assert_eq!(emr_name("etl", "emr-0"), "etl-0");
        assert_eq!(emr_name("etl", "emr-12"), "etl-12");
        assert_eq!(emr_name("etl", "special"), "etl-special");
    }
}
