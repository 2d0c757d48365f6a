//! A small object-document mapping: one typed [`Model`] per collection,
//! knowing its collection name, its key fields and its indexes, and a
//! [`Collection`] wrapper whose methods speak records rather than
//! hand-built documents (`flows.upsert_fenced(&doc, token, ..)`).
//!
//! Documents are encoded with serde + bson. Field order is fixed by the
//! model structs (alphabetical, `_id` first: what Synergy Flow's ODM
//! writes), so encoding a record read from a Synergy document gives the same
//! bytes back.

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use mongodb::options::IndexOptions;
use mongodb::{ClientSession, IndexModel};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

/// The field every fenced document carries: the largest lease token that
/// wrote it or was raised onto it. A write with token `T` applies only where
/// `fence_token` is missing or `<= T`.
pub const FENCE: &str = "fence_token";

/// One collection's typed mapping.
pub trait Model: Serialize + DeserializeOwned + Send + Sync + Unpin {
    /// The collection's name.
    const COLLECTION: &'static str;
    /// The fields that identify a document (a unique index).
    const KEY: &'static [&'static str];

    /// Indexes besides the unique key index.
    fn extra_indexes() -> Vec<IndexModel> {
        Vec::new()
    }

    /// For a collection shared with documents of another shape (Synergy's
    /// `log_recording`): the filter selecting this model's documents, which
    /// the key index is limited to (a partial index). Without it, the other
    /// documents, which lack the key fields, would all share the null key
    /// and a unique index could neither be built nor take a second one.
    fn partial_filter() -> Option<Document> {
        None
    }
}

/// Why an ODM call failed.
#[derive(Debug)]
pub enum OdmError {
    /// The document exists with a larger fence token: the write was refused.
    Fenced,
    Driver(mongodb::error::Error),
    Encode(String),
}

impl From<mongodb::error::Error> for OdmError {
    fn from(e: mongodb::error::Error) -> Self {
        OdmError::Driver(e)
    }
}

/// True for MongoDB's duplicate-key error (E11000).
pub fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        ErrorKind::InsertMany(i) => i
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|w| w.code == 11000)),
        _ => e.to_string().contains("E11000"),
    }
}

/// A typed collection.
pub struct Collection<M: Model> {
    pub inner: mongodb::Collection<Document>,
    /// The ids of documents this store wrote or found, by key, so a fenced
    /// write is one `replaceOne` by `_id`: a filter on the key fields plus
    /// the fence's range made SecantusDB scan every document of the flow
    /// (each earlier timeperiod's too), and nx-27017 answers any multi-field
    /// equality filter with a scan; an `_id` filter is a lookup on both.
    /// An entry gone stale (its document purged) costs one write that
    /// matches nothing, then the key is looked up again.
    ids: Arc<Mutex<HashMap<Vec<u8>, ObjectId>>>,
    model: PhantomData<M>,
}

impl<M: Model> Clone for Collection<M> {
    fn clone(&self) -> Self {
        Collection {
            inner: self.inner.clone(),
            ids: self.ids.clone(),
            model: PhantomData,
        }
    }
}

/// Ids remembered per collection before the memory is cleared (a long-lived
/// `flow serve` or scheduler writes many flows).
const REMEMBERED_IDS: usize = 50_000;

/// The result of a fenced upsert.
pub struct Upserted {
    pub id: ObjectId,
    /// True when the document did not exist and was created.
    pub inserted: bool,
}

/// Encodes a model as its document.
pub fn encode<M: Model>(model: &M) -> Result<Document, OdmError> {
    bson::serialize_to_document(model).map_err(|e| OdmError::Encode(e.to_string()))
}

/// Decodes a document as a model.
pub fn decode<M: Model>(document: Document) -> Result<M, String> {
    bson::deserialize_from_document(document).map_err(|e| e.to_string())
}

/// The filter "stamped with at most `token`". Every document of a flow is
/// stamped when a lease of it is acquired, so none lacks the field.
pub fn fence_ok(token: u64) -> Document {
    doc! { FENCE: { "$lte": token_bson(token) } }
}

/// A document's fence stamp, whatever integer width it was stored in.
pub fn stamp(document: &Document) -> Option<i64> {
    match document.get(FENCE)? {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

/// A key filter's bytes, the id memory's key.
fn key_bytes(key: &Document) -> Vec<u8> {
    key.to_vec().unwrap_or_default()
}

fn token_i64(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(i64::MAX)
}

/// Tokens are stored as BSON int64.
pub fn token_bson(token: u64) -> Bson {
    Bson::Int64(token_i64(token))
}

impl<M: Model> Collection<M> {
    pub fn new(db: &mongodb::Database) -> Self {
        Self::named(db, M::COLLECTION)
    }

    /// The model in a collection of another name (Synergy keeps Jobs in
    /// one collection per time qualifier).
    pub fn named(db: &mongodb::Database, name: &str) -> Self {
        Collection {
            inner: db.collection(name),
            ids: Arc::default(),
            model: PhantomData,
        }
    }

    /// The model's indexes: the unique key index, then the others. Names are
    /// left to the server, so an index Synergy Flow created with the same
    /// keys is the same index.
    pub fn indexes() -> Vec<IndexModel> {
        let mut keys = Document::new();
        for field in M::KEY {
            keys.insert(*field, 1);
        }
        let mut all = vec![IndexModel::builder()
            .keys(keys)
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .partial_filter_expression(M::partial_filter())
                    .build(),
            )
            .build()];
        all.extend(M::extra_indexes());
        all
    }

    /// The key filter of an encoded document.
    pub fn key_filter(document: &Document) -> Document {
        let mut filter = Document::new();
        for field in M::KEY {
            filter.insert(*field, document.get(*field).cloned().unwrap_or(Bson::Null));
        }
        filter
    }

    /// The id remembered for the document of `key`, if any.
    fn remembered(&self, key: &Document) -> Option<ObjectId> {
        let ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        ids.get(&key_bytes(key)).copied()
    }

    /// Remembers that the document of `key` has the id `id`.
    pub fn remember(&self, key: &Document, id: ObjectId) {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.len() >= REMEMBERED_IDS {
            ids.clear();
        }
        ids.insert(key_bytes(key), id);
    }

    /// Inserts or replaces `model` by key, only where the stored document's
    /// fence token is at most `token`, and stamps it with `token`. A
    /// document that exists with a larger token is [`OdmError::Fenced`].
    ///
    /// With the document's id known (the model's own `_id`, or remembered
    /// from an earlier write), an update is one `replaceOne` by `_id` and
    /// fence. Otherwise, or when that matches nothing, the key is looked up:
    /// a newer stamp is fenced, an existing document is replaced by its id,
    /// a missing one is inserted (the unique key index settling a race). No
    /// upsert: an upsert's query-to-document rules differ between MongoDB
    /// and other wire-protocol servers; a replacement, not `$set`: the
    /// document becomes exactly the record (empty fields go), and servers
    /// that store `$set` dates as text keep BSON dates.
    pub async fn upsert_fenced(
        &self,
        model: &M,
        token: u64,
        new_id: ObjectId,
        mut session: Option<&mut ClientSession>,
    ) -> Result<Upserted, OdmError> {
        let mut document = encode(model)?;
        let own_id = match document.remove("_id") {
            Some(Bson::ObjectId(id)) => Some(id),
            _ => None,
        };
        let key = Self::key_filter(&document);
        document.insert(FENCE, token_bson(token));
        let insert_id = own_id.unwrap_or(new_id);
        let mut target = own_id.or_else(|| self.remembered(&key));
        for _ in 0..5 {
            let id = match target.take() {
                Some(id) => id,
                None => {
                    let action = self
                        .inner
                        .find_one(key.clone())
                        .projection(doc! { "_id": 1, FENCE: 1 });
                    let existing = match session.as_deref_mut() {
                        Some(s) => action.session(s).await,
                        None => action.await,
                    }?;
                    let Some(existing) = existing else {
                        let mut insert = document.clone();
                        insert.insert("_id", insert_id);
                        let action = self.inner.insert_one(insert);
                        let inserted = match session.as_deref_mut() {
                            Some(s) => action.session(s).await,
                            None => action.await,
                        };
                        match inserted {
                            Ok(_) => {
                                self.remember(&key, insert_id);
                                return Ok(Upserted {
                                    id: insert_id,
                                    inserted: true,
                                });
                            }
                            // Written meanwhile: look it up again.
                            Err(e) if is_duplicate_key(&e) => continue,
                            Err(e) => return Err(OdmError::Driver(e)),
                        }
                    };
                    let id = existing.get_object_id("_id").map_err(|e| {
                        OdmError::Encode(format!(
                            "{} document without an ObjectId: {e}",
                            M::COLLECTION
                        ))
                    })?;
                    match stamp(&existing) {
                        Some(stamp) if stamp > token_i64(token) => return Err(OdmError::Fenced),
                        Some(_) => id,
                        // Never stamped (a document another program added):
                        // stamp it as old, then replace it.
                        None => {
                            let action = self.inner.update_one(
                                doc! { "_id": id, FENCE: { "$exists": false } },
                                doc! { "$set": { FENCE: 0_i64 } },
                            );
                            match session.as_deref_mut() {
                                Some(s) => action.session(s).await,
                                None => action.await,
                            }?;
                            id
                        }
                    }
                }
            };
            let mut filter = doc! { "_id": id };
            filter.extend(fence_ok(token));
            let action = self.inner.replace_one(filter, document.clone());
            let replaced = match session.as_deref_mut() {
                Some(s) => action.session(s).await,
                None => action.await,
            }?;
            if replaced.matched_count == 1 {
                self.remember(&key, id);
                return Ok(Upserted {
                    id,
                    inserted: false,
                });
            }
            // Gone (purged), stamped newer meanwhile, or a stale id: the
            // key's lookup tells which.
        }
        Err(OdmError::Encode(format!(
            "{}: the document kept changing under the write",
            M::COLLECTION
        )))
    }

    /// Documents matching `filter`, sorted, decoded. A document that does
    /// not decode is an error naming it.
    pub async fn find_all(
        &self,
        filter: Document,
        sort: Document,
        skip: Option<u64>,
        limit: Option<i64>,
    ) -> Result<Vec<Result<M, (Document, String)>>, mongodb::error::Error> {
        use futures_util::TryStreamExt;
        let mut action = self.inner.find(filter).sort(sort);
        if let Some(skip) = skip {
            action = action.skip(skip);
        }
        if let Some(limit) = limit {
            action = action.limit(limit);
        }
        let documents: Vec<Document> = action.await?.try_collect().await?;
        Ok(documents
            .into_iter()
            .map(|d| decode::<M>(d.clone()).map_err(|e| (d, e)))
            .collect())
    }
}
