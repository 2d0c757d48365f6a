//! The setters every cloud cluster's factory builder has, written once.
//!
//! Each cloud's builder is its own type (object_store's habit: a builder
//! per backend, its setters inherent methods, so a library user needs no
//! trait in scope), holding `config` (the cloud's settings, which name the
//! shared settings alike: `poll`, `launch_poll`, `retry`, `job_logs`) and
//! `clock`. Inherent methods of another crate's type cannot come from a
//! generic or a trait's provided methods, hence a macro: it writes them
//! into the builder's `impl` block.

/// Writes the setters of the settings every cloud cluster has, and
/// `with_clock` and `config`, into the `impl` block of a builder with
/// fields `config: $config` and `clock: Option<Arc<dyn Clock>>`.
///
/// `cluster_builder_setters!(DataprocConfig);` inside `impl
/// DataprocClusterFactoryBuilder { ... }` gives `with_poll`,
/// `with_launch_poll`, `with_retry`, `with_job_logs`, `with_clock` and
/// `config`.
#[macro_export]
macro_rules! cluster_builder_setters {
    ($config:ident) => {
        #[doc = concat!("Sets [`", stringify!($config), "::poll`].")]
        pub fn with_poll(mut self, poll: $crate::PollConfig) -> Self {
            self.config.poll = poll;
            self
        }
        #[doc = concat!("Sets [`", stringify!($config), "::launch_poll`].")]
        pub fn with_launch_poll(mut self, interval: ::std::time::Duration) -> Self {
            self.config.launch_poll = interval;
            self
        }
        #[doc = concat!("Sets [`", stringify!($config), "::retry`].")]
        pub fn with_retry(mut self, retry: $crate::RetryConfig) -> Self {
            self.config.retry = retry;
            self
        }
        #[doc = concat!("Sets [`", stringify!($config), "::job_logs`].")]
        pub fn with_job_logs(mut self, logs: $crate::JobLogs) -> Self {
            self.config.job_logs = logs;
            self
        }
        /// The clock polls and retries sleep on (tests pass a
        /// [`ManualClock`](flow_cloud::ManualClock)); default tokio's.
        pub fn with_clock(mut self, clock: ::std::sync::Arc<dyn $crate::Clock>) -> Self {
            self.clock = Some(clock);
            self
        }
        /// The settings so far.
        pub fn config(&self) -> &$config {
            &self.config
        }
    };
}
