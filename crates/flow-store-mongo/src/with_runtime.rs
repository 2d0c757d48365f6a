//! [`MongoStoreWithRuntime`]: the store on a runtime of its own, for callers
//! that open it before (or outside) their async runtime, as the `flow`
//! command does. The driver's connection pool lives on the runtime that
//! created the client, so the client gets one that lives as long as the
//! store; each call runs there and is awaited from wherever it was made.

use crate::{MongoError, MongoOptions, MongoStore};
use async_trait::async_trait;
use flow_core::{FlowStore, StoreError};
use std::time::Duration;

/// A [`MongoStore`] with its own two-thread runtime.
pub struct MongoStoreWithRuntime {
    store: MongoStore,
    /// Taken by `drop`, which shuts it down on a thread of its own.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for MongoStoreWithRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.store.fmt(f)
    }
}

impl MongoStoreWithRuntime {
    /// Connects (see [`MongoStore::connect`]); blocking. Call it outside an
    /// async runtime.
    pub fn open(options: &MongoOptions) -> Result<Self, MongoError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flow-mongo")
            .enable_all()
            .build()
            .map_err(|e| MongoError::Setup {
                hosts: crate::validate_uri(&options.uri)
                    .map(|h| h.join(", "))
                    .unwrap_or_default(),
                operation: "starting the driver's runtime",
                message: e.to_string(),
            })?;
        let store = runtime.block_on(MongoStore::connect(options))?;
        Ok(MongoStoreWithRuntime {
            store,
            runtime: Some(runtime),
        })
    }

    /// The connected store (for calls made on its runtime).
    pub fn store(&self) -> &MongoStore {
        &self.store
    }

    async fn run<T, F>(&self, call: impl FnOnce(MongoStore) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Closed);
        };
        let task = runtime.spawn(call(self.store.clone()));
        task.await.unwrap_or(Err(StoreError::Closed))
    }
}

impl Drop for MongoStoreWithRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's async context panics:
        // move it (the only owner) to a thread that may block. (A clone
        // handed over there raced with this field's own drop: whichever
        // came last dropped the runtime, here in the async context.)
        if let Some(runtime) = self.runtime.take() {
            std::thread::spawn(move || runtime.shutdown_timeout(Duration::from_secs(2)));
        }
    }
}

/// Owns an argument, to move it to the store's runtime.
macro_rules! own {
    (owned $arg:ident) => {
        ::std::borrow::ToOwned::to_owned($arg)
    };
    (opt $arg:ident) => {
        $arg.cloned()
    };
    (copy $arg:ident) => {
        $arg
    };
}

/// Lends an owned argument back as the store's method takes it.
macro_rules! lend {
    (owned $arg:ident) => {
        ::std::borrow::Borrow::borrow(&$arg)
    };
    (opt $arg:ident) => {
        $arg.as_ref()
    };
    (copy $arg:ident) => {
        $arg
    };
}

/// Every `FlowStore` method: own the arguments, run the call on the
/// store's runtime, await it here.
macro_rules! on_runtime {
    ($( $name:ident ( $( $arg:ident : $kind:ident $ty:ty ),* $(,)? ) -> $ok:ty ; )*) => {
        #[async_trait]
        impl FlowStore for MongoStoreWithRuntime {
            $(
                async fn $name(&self, $( $arg: $ty ),*) -> Result<$ok, StoreError> {
                    $( let $arg = own!($kind $arg); )*
                    self.run(move |s| async move { s.$name($( lend!($kind $arg) ),*).await })
                        .await
                }
            )*
        }
    };
}

flow_core::for_each_store_method!(on_runtime);
