//! The end of a command's log (`GET /commands/ID/logs`), read through
//! `flow_cloud::tail`: the answer is streamed and only its last
//! `max_bytes` are kept, so memory stays bounded whatever the log's size.

use crate::api::Api;
use async_trait::async_trait;
use flow_cloud::tail::ObjectStream;
use flow_cloud::{Clock, RemoteObjects, Tail, TailError, TailOptions};
use futures_util::TryStreamExt;
use reqwest::Response;
use std::sync::{Arc, Mutex, PoisonError};

/// One command's log as a remote object. QDS does not say a log's size
/// before sending it, so `size` asks for the log itself and keeps the
/// answer for `read_from` (one request), reporting 0: `tail` then reads
/// from the start and keeps the end.
struct CommandLog<'a> {
    api: &'a Api,
    id: u64,
    answer: Mutex<Option<Response>>,
}

impl CommandLog<'_> {
    fn error(&self, location: &str, e: impl ToString) -> TailError {
        TailError {
            location: location.to_string(),
            message: e.to_string(),
        }
    }
}

#[async_trait]
impl RemoteObjects for CommandLog<'_> {
    async fn size(&self, location: &str) -> Result<Option<u64>, TailError> {
        let answer = self
            .api
            .logs(self.id)
            .await
            .map_err(|e| self.error(location, e))?;
        let exists = answer.is_some();
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = answer;
        Ok(exists.then_some(0))
    }

    async fn read_from(&self, location: &str, _offset: u64) -> Result<ObjectStream, TailError> {
        let kept = self
            .answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let response = match kept {
            Some(response) => response,
            None => self
                .api
                .logs(self.id)
                .await
                .map_err(|e| self.error(location, e))?
                .ok_or_else(|| self.error(location, "the log is gone"))?,
        };
        let stream = response.bytes_stream().map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }
}

/// The last `options.max_bytes` of command `id`'s log, or `None` if QDS
/// had none within `options.wait`.
pub(crate) async fn command_log(
    api: &Api,
    id: u64,
    options: &TailOptions,
    clock: &Arc<dyn Clock>,
) -> Result<Option<Tail>, TailError> {
    let log = CommandLog {
        api,
        id,
        answer: Mutex::new(None),
    };
    let location = format!("the log of command {id}");
    flow_cloud::tail(&log, &location, options, clock).await
}
