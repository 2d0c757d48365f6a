//! Request counts per API method and the faults a test injects: a 429
//! with `Retry-After`, a 503 before the call is carried out, a 503 after
//! it is (a lost answer). Each API module calls [`Faults::arrive`],
//! [`Faults::refuse`] and [`Faults::depart`] around every API request.

use crate::errors::ErrorShape;
use crate::server::ok;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Default)]
struct Record {
    requests: BTreeMap<String, u64>,
    /// `Retry-After` seconds of the next 429s, by method.
    throttles: HashMap<String, VecDeque<u64>>,
    /// Methods whose next calls are done, then answered 503, by count.
    lost_answers: HashMap<String, usize>,
    /// Methods whose next calls are refused with 503 before anything is
    /// done, by count.
    unavailable: HashMap<String, usize>,
    /// Each answer's status by method, in order (429s of throttling aside).
    answers: BTreeMap<String, Vec<u16>>,
}

/// One fake's counts and pending faults.
pub struct Faults {
    shape: ErrorShape,
    record: Mutex<Record>,
}

impl Faults {
    /// Faults answered in the API's error `shape`.
    pub fn new(shape: ErrorShape) -> Self {
        Faults {
            shape,
            record: Mutex::default(),
        }
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `times` calls of `method` answer 429 with `Retry-After:
    /// retry_after_secs`.
    pub fn throttle(&self, method: &str, times: usize, retry_after_secs: u64) {
        self.record()
            .throttles
            .entry(method.to_string())
            .or_default()
            .extend(std::iter::repeat_n(retry_after_secs, times));
    }

    /// Drops the 429s of [`throttle`](Self::throttle) not used up yet, for
    /// every method: the service answers again.
    pub fn unthrottle(&self) {
        self.record().throttles.clear();
    }

    /// The next `times` calls of `method` are carried out, then answered
    /// 503 `UNAVAILABLE`: the answer is lost, what was asked is done.
    pub fn lose_answers(&self, method: &str, times: usize) {
        *self
            .record()
            .lost_answers
            .entry(method.to_string())
            .or_default() += times;
    }

    /// The next `times` calls of `method` are refused with 503
    /// `UNAVAILABLE` before anything is done.
    pub fn unavailable(&self, method: &str, times: usize) {
        *self
            .record()
            .unavailable
            .entry(method.to_string())
            .or_default() += times;
    }

    /// Requests so far by method.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.record().requests.clone()
    }

    /// Requests of one method so far.
    pub fn count(&self, method: &str) -> u64 {
        self.record().requests.get(method).copied().unwrap_or(0)
    }

    /// All API requests so far.
    pub fn total(&self) -> u64 {
        self.record().requests.values().sum()
    }

    /// The HTTP status of each answer to `method` so far, in order (the
    /// 429s of [`throttle`](Self::throttle) aside).
    pub fn answers(&self, method: &str) -> Vec<u16> {
        self.record()
            .answers
            .get(method)
            .cloned()
            .unwrap_or_default()
    }

    /// A request of `method` arrives: counts it, and answers 429 if it is
    /// throttled.
    pub fn arrive(&self, method: &str) -> Option<Response> {
        let mut record = self.record();
        *record.requests.entry(method.to_string()).or_default() += 1;
        let retry_after = record
            .throttles
            .get_mut(method)
            .and_then(VecDeque::pop_front)?;
        let mut response = (self.shape)(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            format!("Quota exceeded for quota metric 'Requests' of method {method}: rate limited"),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            retry_after
                .to_string()
                .parse()
                .expect("digits are a header value"),
        );
        Some(response)
    }

    /// Just before carrying a request out: a 503 if `method` is to be
    /// refused (then [`depart`](Self::depart) with it, unchanged).
    pub fn refuse(&self, method: &str) -> Option<Response> {
        take_one(&mut self.record().unavailable, method).then(|| self.unavailable_answer())
    }

    /// The answer leaves: replaced by a 503 if it is to be lost (unless it
    /// was already refused), and recorded.
    pub fn depart(&self, method: &str, refused: bool, response: Response) -> Response {
        let mut record = self.record();
        let response = if !refused && take_one(&mut record.lost_answers, method) {
            self.unavailable_answer()
        } else {
            response
        };
        record
            .answers
            .entry(method.to_string())
            .or_default()
            .push(response.status().as_u16());
        response
    }

    fn unavailable_answer(&self) -> Response {
        (self.shape)(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.".into(),
        )
    }
}

/// Takes one from `method`'s count; true when there was one.
fn take_one(counts: &mut HashMap<String, usize>, method: &str) -> bool {
    match counts.get_mut(method) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// The control paths under `/fake/` every fake serves for its faults:
/// `GET requests` (`{"total", "methods": {method: count}}`), `GET
/// answers?method=M`, `POST throttle?method=M&times=N&retry_after=S`,
/// `POST unthrottle` (drops the 429s not used up yet),
/// `POST lose_answers?method=M&times=N`, `POST unavailable?method=M&times=N`.
/// `None` for another path.
pub fn control(
    faults: &Faults,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
) -> Option<Response> {
    let name = q.get("method").cloned().unwrap_or_default();
    let times = q.get("times").and_then(|t| t.parse().ok()).unwrap_or(1);
    match (method.as_str(), path) {
        ("GET", "requests") => {
            let requests = faults.requests();
            let total: u64 = requests.values().sum();
            Some(ok(json!({ "total": total, "methods": requests })))
        }
        ("GET", "answers") => Some(ok(json!({ "answers": faults.answers(&name) }))),
        ("POST", "throttle") => {
            let after = q
                .get("retry_after")
                .and_then(|t| t.parse().ok())
                .unwrap_or(1);
            faults.throttle(&name, times, after);
            Some(ok(json!({})))
        }
        ("POST", "unthrottle") => {
            faults.unthrottle();
            Some(ok(json!({})))
        }
        ("POST", "lose_answers") => {
            faults.lose_answers(&name, times);
            Some(ok(json!({})))
        }
        ("POST", "unavailable") => {
            faults.unavailable(&name, times);
            Some(ok(json!({})))
        }
        _ => None,
    }
}
