//! Transactions (on a replica set or a sharded cluster): a session, the
//! commit with its retries, and the abort that says whether to retry.

use crate::MongoStore;
use flow_core::{FlowKey, StoreError};
use mongodb::ClientSession;

impl MongoStore {
    /// A session for a transaction.
    pub(crate) async fn session(
        &self,
        key: &FlowKey,
        operation: &'static str,
    ) -> Result<ClientSession, StoreError> {
        self.client
            .start_session()
            .await
            .map_err(|e| self.op_error(operation, key, e))
    }

    /// Commits; `Ok(false)` when the whole transaction should be retried.
    pub(crate) async fn commit(
        &self,
        session: &mut ClientSession,
        key: &FlowKey,
        operation: &'static str,
    ) -> Result<bool, StoreError> {
        for _ in 0..5 {
            match session.commit_transaction().await {
                Ok(()) => return Ok(true),
                Err(e) if e.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT) => {
                    continue
                }
                Err(e) if e.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR) => {
                    return Ok(false)
                }
                Err(e) => return Err(self.op_error(operation, key, e)),
            }
        }
        Err(self.op_error(operation, key, "the commit's result stayed unknown"))
    }

    /// After a failed transaction body: aborts; true when it is worth
    /// running again (a write conflict with another engine).
    pub(crate) async fn abort(
        &self,
        session: &mut ClientSession,
        e: &StoreError,
        attempt: usize,
    ) -> bool {
        let _ = session.abort_transaction().await;
        attempt < 5
            && matches!(e, StoreError::Operation { message, .. }
                if message.contains("WriteConflict") || message.contains("TransientTransactionError"))
    }
}
