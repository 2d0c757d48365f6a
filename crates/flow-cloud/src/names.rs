//! Names a cloud limits in length that must still not collide: instead of
//! being cut (which made `customer_lifetime_value_rollup_by_region` at two
//! timeperiods one cluster), a name too long keeps its start and ends with
//! a short hash of the whole text. And the names the clouds give a run's
//! clusters, alike for EMR, Dataproc and Azure: a base (configured, or
//! made from the run key) and the run's index of the cluster. Which
//! characters a cloud allows stays in its crate (passed in as `text`).

use flow_core::ExecutionContext;
use sha2::{Digest, Sha256};

/// Hex digits of the hash a shortened name ends with (32 bits: two keys of
/// one flow collide with a chance of one in four billion).
pub const HASH_DIGITS: usize = 8;

/// `text` if it has at most `max` characters (ASCII, as cloud names are),
/// else its first `max - 9` characters (no trailing `-`), `-` and
/// [`HASH_DIGITS`] hex digits of the SHA-256 of the whole `text`.
pub fn fit_name(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let hash = short_hash(text);
    let keep = max.saturating_sub(HASH_DIGITS + 1);
    let head: String = text.chars().take(keep).collect();
    let head = head.trim_end_matches(['-', '_']);
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// [`HASH_DIGITS`] lowercase hex digits of the SHA-256 of `text`.
pub fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(HASH_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The backend's name of the run's cluster `run_name` on `base`: `BASE-N`
/// for `KIND-N` (the run numbers its clusters), else `BASE-` and what
/// `other` makes of `run_name` (the cloud's characters).
pub fn numbered_name(base: &str, run_name: &str, other: impl FnOnce(&str) -> String) -> String {
    let suffix = match run_name.rsplit_once('-') {
        Some((_, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n.to_string(),
        _ => other(run_name),
    };
    format!("{base}-{suffix}")
}

/// The base of a run's cluster names when none is configured:
/// `flow-FLOW-TIMEPERIOD` in the cloud's characters (`text`), fitted into
/// `max` characters ([`fit_name`]), so two run keys never share a cluster.
pub fn run_key_name(
    context: &ExecutionContext,
    text: impl FnOnce(&str) -> String,
    max: usize,
) -> String {
    fit_name(
        &text(&format!(
            "flow-{}-{}",
            context.flow_name, context.timeperiod
        )),
        max,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_stay_and_long_ones_end_with_a_hash_of_the_whole() {
        assert_eq!(fit_name("flow-etl-2026120700", 48), "flow-etl-2026120700");
        let a = fit_name(&format!("flow-{}-2026120710", "x".repeat(100)), 48);
        let b = fit_name(&format!("flow-{}-2026120711", "x".repeat(100)), 48);
        assert_ne!(a, b);
        assert_eq!(a.len(), 48);
        assert!(a.starts_with("flow-xxx"), "{a}");
        assert_eq!(short_hash("abc"), "ba7816bf");
    }

    #[test]
    fn a_run_numbers_its_clusters_on_a_base() {
        assert_eq!(numbered_name("etl", "emr-12", str::to_string), "etl-12");
        assert_eq!(
            numbered_name("etl", "emr-", |n| n.replace('-', "_")),
            "etl-emr_"
        );
        assert_eq!(
            numbered_name("etl", "big_one", |n| n.replace('_', "-")),
            "etl-big-one"
        );
    }
}
