//! Names a cloud limits in length that must still not collide: instead of
//! being cut (which made `customer_lifetime_value_rollup_by_region` at two
//! timeperiods one cluster), a name too long keeps its start and ends with
//! a short hash of the whole text.

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
}
