//! The skeleton of a [`JobSource`](crate::JobSource) that lists a cluster's
//! jobs (Dataproc's `jobs.list`, QDS's command history), written once: the
//! only job watched is read by id; several are found in one listing per
//! tick; the ones no listing shows (older than its pages, on another
//! cluster) wait in [`Unlisted`] and are read by id, one per tick in place
//! of the listing, while the others count as running ([`answer_with`]).
//! What a listing is, and what a status that says nothing yet looks like,
//! stay in each cloud's source.

use std::collections::VecDeque;
use std::future::Future;

/// What a tick of a listing source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<Id> {
    /// The only job watched, by id (its whole answer, details included).
    Only(Id),
    /// A watched job no listing showed, by id in place of the listing.
    Unlisted(Id),
    /// The listing.
    Listing,
}

impl<Id: PartialEq + Clone> Read<Id> {
    /// This tick's answer about the watched `ids` when it reads one job by
    /// id (`get`: `None` when the backend has no such job), the others
    /// answered `not_yet`; `None` when the tick lists.
    pub async fn by_id<S, E, Fut>(
        self,
        ids: &[Id],
        get: impl FnOnce(Id) -> Fut,
        not_yet: impl Fn(&Id) -> S,
    ) -> Result<Option<Vec<(Id, S)>>, E>
    where
        Fut: Future<Output = Result<Option<(Id, S)>, E>>,
    {
        Ok(match self {
            Read::Only(id) => Some(get(id).await?.into_iter().collect()),
            Read::Unlisted(id) => {
                let found = get(id).await?.into_iter().collect();
                Some(answer_with(ids, found, not_yet))
            }
            Read::Listing => None,
        })
    }
}

/// The watched jobs no listing showed, read by id one per tick.
#[derive(Debug, Clone)]
pub struct Unlisted<Id> {
    queue: VecDeque<Id>,
}

impl<Id> Default for Unlisted<Id> {
    fn default() -> Self {
        Unlisted {
            queue: VecDeque::new(),
        }
    }
}

impl<Id: PartialEq + Clone> Unlisted<Id> {
    /// What this tick reads about the `watched` jobs: the only one by id
    /// (forgetting the queue), else the next queued one still watched
    /// (those no longer watched are dropped), else the listing.
    pub fn read(&mut self, watched: &[Id]) -> Read<Id> {
        if let [only] = watched {
            self.queue.clear();
            return Read::Only(only.clone());
        }
        self.queue.retain(|id| watched.contains(id));
        match self.queue.pop_front() {
            Some(id) => Read::Unlisted(id),
            None => Read::Listing,
        }
    }

    /// Queues `id`, which the listing did not show, to be read by id
    /// (once).
    pub fn push(&mut self, id: Id) {
        if !self.queue.contains(&id) {
            self.queue.push_back(id);
        }
    }
}

/// A tick's answer about the watched `ids`: `found` for the ids it has,
/// `not_yet(id)` (a status that counts as running, so the poller does not
/// count the job as missing) for the others.
pub fn answer_with<Id: PartialEq + Clone, S>(
    ids: &[Id],
    found: Vec<(Id, S)>,
    not_yet: impl Fn(&Id) -> S,
) -> Vec<(Id, S)> {
    let mut answer: Vec<_> = ids
        .iter()
        .filter(|id| !found.iter().any(|(f, _)| f == *id))
        .map(|id| (id.clone(), not_yet(id)))
        .collect();
    answer.extend(found);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_jobs_are_read_one_a_tick_while_watched() {
        let mut unlisted = Unlisted::default();
        assert_eq!(unlisted.read(&[1, 2]), Read::Listing);
        unlisted.push(1);
        unlisted.push(2);
        unlisted.push(1);
        unlisted.push(3);
        assert_eq!(unlisted.read(&[2, 3]), Read::Unlisted(2));
        assert_eq!(unlisted.read(&[1, 3]), Read::Unlisted(3));
        assert_eq!(unlisted.read(&[1, 3]), Read::Listing);
        unlisted.push(4);
        unlisted.push(5);
        assert_eq!(unlisted.read(&[4]), Read::Only(4));
        assert_eq!(unlisted.read(&[4, 5]), Read::Listing);
    }

    #[tokio::test]
    async fn a_tick_by_id_answers_every_watched_job_and_a_listing_tick_nothing() {
        let get = |id: u8| async move { Ok::<_, ()>((id != 9).then_some((id, "done"))) };
        assert_eq!(
            Read::Only(9).by_id(&[9], get, |_| "").await,
            Ok(Some(vec![]))
        );
        let answer = Read::Unlisted(2).by_id(&[1, 2], get, |_| "").await;
        assert_eq!(answer, Ok(Some(vec![(1, ""), (2, "done")])));
        assert_eq!(Read::Listing.by_id(&[1, 2], get, |_| "").await, Ok(None));
    }

    #[test]
    fn the_answer_has_every_watched_job() {
        let mut answer = answer_with(&[1, 2, 3], vec![(2, "done")], |_| "");
        answer.sort();
        assert_eq!(answer, vec![(1, ""), (2, "done"), (3, "")]);
    }
}
