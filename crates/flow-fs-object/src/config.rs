//! What the stores' settings share: the checks of the values every store
//! has (bucket name, page sizes and batches, concurrency, timeouts) and the
//! making of [`ObjectSettings`] from them. Each store's config keeps its own
//! fields (a flat `[...]` table, `deny_unknown_fields`) and limits; only the
//! checking is written here.

use crate::ObjectSettings;
use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

/// A setting refused: its name and why. Each store's error wraps it as its
/// own `Invalid { field, message }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The setting's name.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl Invalid {
    /// `field` is refused for `message`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Invalid {
            field,
            message: message.into(),
        }
    }
}

/// A bucket (or container) name that is not one: shorter than 3
/// characters, or with a `/`, or beyond `max_len` when the store has one
/// (`what` is how the refusal describes a good name, e.g. `"a bucket
/// name"`).
pub fn check_bucket(
    field: &'static str,
    name: Option<&str>,
    max_len: Option<usize>,
    what: &str,
) -> Result<(), Invalid> {
    match name {
        Some(name)
            if name.len() < 3
                || name.contains('/')
                || max_len.is_some_and(|max| name.len() > max) =>
        {
            Err(Invalid::new(field, format!("{name:?} is not {what}")))
        }
        _ => Ok(()),
    }
}

/// `value` within `range` (a page size, a batch): `"N: must be 1 to 1000"`.
pub fn check_range<T: PartialOrd + fmt::Display>(
    field: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), Invalid> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!("{value}: must be {} to {}", range.start(), range.end()),
        ))
    }
}

/// A count of things done at the same time, at least one.
pub fn check_concurrency(field: &'static str, n: usize) -> Result<(), Invalid> {
    if n == 0 {
        Err(Invalid::new(field, "must be at least 1"))
    } else {
        Ok(())
    }
}

/// Durations (intervals, timeouts) that may not be zero, checked in order.
pub fn check_not_zero<const N: usize>(
    durations: [(&'static str, Duration); N],
) -> Result<(), Invalid> {
    match durations.iter().find(|(_, value)| value.is_zero()) {
        Some((field, _)) => Err(Invalid::new(field, "must not be zero")),
        None => Ok(()),
    }
}

impl ObjectSettings {
    /// [`ObjectSettings::new`] from a store's settings, a prefix that climbs
    /// out of the bucket refused as the `prefix` setting.
    pub fn from_config(
        bucket: Option<String>,
        prefix: Option<&str>,
        list_page_size: u32,
        concurrency: usize,
    ) -> Result<Self, Invalid> {
        ObjectSettings::new(bucket, prefix, list_page_size, concurrency)
            .map_err(|e| Invalid::new("prefix", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_names_its_field_and_says_why() {
        assert_eq!(
            check_bucket("bucket", Some("a/b"), None, "a bucket name"),
            Err(Invalid::new("bucket", "\"a/b\" is not a bucket name"))
        );
        assert!(check_bucket("bucket", Some("abc"), None, "a bucket name").is_ok());
        assert!(check_bucket("container", Some(&"c".repeat(64)), Some(63), "x").is_err());
        assert!(check_bucket("container", Some(&"c".repeat(63)), Some(63), "x").is_ok());
        assert!(check_bucket("bucket", None, None, "x").is_ok());
        assert_eq!(
            check_range("list_page_size", 1001u32, 1..=1000),
            Err(Invalid::new("list_page_size", "1001: must be 1 to 1000"))
        );
        assert!(check_range("list_page_size", 1000u32, 1..=1000).is_ok());
        assert_eq!(
            check_concurrency("concurrency", 0),
            Err(Invalid::new("concurrency", "must be at least 1"))
        );
        assert_eq!(
            check_not_zero([("a", Duration::from_secs(1)), ("b", Duration::ZERO)]),
            Err(Invalid::new("b", "must not be zero"))
        );
        let e = ObjectSettings::from_config(None, Some("../up"), 10, 1).unwrap_err();
        assert_eq!(e.field, "prefix");
    }
}
