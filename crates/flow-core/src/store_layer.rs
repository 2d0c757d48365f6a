//! [`StoreLayer`]: a [`FlowStore`] that wraps another and changes only some
//! of its calls (masking what is written, publishing writes, counting or
//! failing calls in tests), written without forwarding every method by
//! hand.
//!
//! Why a trait with default methods and one blanket
//! `impl<T: StoreLayer> FlowStore for T`, rather than the alternatives:
//! - a delegation macro invoked by each wrapper would make every wrapper
//!   name the methods it writes itself; with a trait, a wrapper overrides
//!   what it changes like any default method;
//! - splitting `FlowStore` by concern (records, leases, logs, as apalis
//!   splits its storage capabilities) would change every backend and every
//!   `Arc<dyn FlowStore>` holder, and each part would still be forwarded.
//!
//! The defaults and the blanket impl are both generated here from
//! [`for_each_store_method!`](crate::for_each_store_method), the one list
//! of `FlowStore`'s methods, so a method is forwarded by writing it there.

use crate::store::FlowStore;
use async_trait::async_trait;

/// Writes [`StoreLayer`] (a default per method: note the call, forward to
/// the inner store) and the blanket `FlowStore` impl calling those.
macro_rules! store_layer {
    ($( $name:ident ( $( $arg:ident : $kind:ident $ty:ty ),* $(,)? ) -> $ok:ty ; )*) => {
        /// A store wrapping [`StoreLayer::inner`]: every method defaults to calling
        /// the inner store's, so a wrapper overrides only what it changes, and the
        /// blanket implementation makes it a [`FlowStore`].
        ///
        /// ```
        /// use flow_core::{FlowStore, LogLine, StoreError, StoreLayer};
        /// use std::sync::atomic::{AtomicUsize, Ordering};
        /// use std::sync::Arc;
        ///
        /// /// Counts the log lines written; everything else goes straight through.
        /// struct CountingLines {
        ///     inner: Arc<dyn FlowStore>,
        ///     lines: AtomicUsize,
        /// }
        ///
        /// #[flow_core::async_trait]
        /// impl StoreLayer for CountingLines {
        ///     fn inner(&self) -> &dyn FlowStore {
        ///         &*self.inner
        ///     }
        ///     async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        ///         self.lines.fetch_add(lines.len(), Ordering::Relaxed);
        ///         self.inner.append_logs(lines).await
        ///     }
        /// }
        /// ```
        #[async_trait]
        pub trait StoreLayer: Send + Sync {
            /// The store calls go to unless the layer overrides them.
            fn inner(&self) -> &dyn FlowStore;

            /// Called with the method's name by every default method before
            /// it calls the inner store's (not by the methods a layer
            /// overrides): for layers that count or trace calls.
            fn called(&self, _method: &'static str) {}

            $(
                #[doc = concat!("See [`FlowStore::", stringify!($name), "`].")]
                async fn $name(&self, $( $arg: $ty ),*) -> Result<$ok, crate::StoreError> {
                    self.called(stringify!($name));
                    self.inner().$name($( $arg ),*).await
                }
            )*
        }

        #[async_trait]
        impl<T: StoreLayer> FlowStore for T {
            $(
                async fn $name(&self, $( $arg: $ty ),*) -> Result<$ok, crate::StoreError> {
                    StoreLayer::$name(self, $( $arg ),*).await
                }
            )*
        }
    };
}

crate::for_each_store_method!(store_layer);
