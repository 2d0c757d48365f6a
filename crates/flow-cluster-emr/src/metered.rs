//! Counts every EMR request attempt in [`flow_core::meter`] (backend `emr`,
//! call from the request's `X-Amz-Target`, e.g. `DescribeCluster`), as an
//! SDK interceptor: one place sees every call the crate makes.

use aws_sdk_emr::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_emr::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_emr::error::BoxError;

#[derive(Debug)]
pub(crate) struct MeteredCalls;

impl Intercept for MeteredCalls {
    fn name(&self) -> &'static str {
        "flow-meter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("unknown");
        // `ElasticMapReduce.DescribeCluster` -> `DescribeCluster`.
        let call = target.rsplit('.').next().unwrap_or(target);
        flow_core::meter::cloud_request("emr", call);
        Ok(())
    }
}
