//! The arithmetic a run's usage must match, from what `flow status --json`
//! shows of its cluster records: each group's count × the hours from the
//! record's `launched_at` to its `usage.ended_at` × the group's price.

use serde_json::Value;

/// The hours a cluster record covers, from its recorded times.
pub fn billed_hours(cluster: &Value) -> f64 {
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("{cluster}")))
            .unwrap()
    };
    let millis =
        (at(&cluster["usage"]["ended_at"]) - at(&cluster["launched_at"])).num_milliseconds();
    assert!(millis > 0, "the cluster was up for a while: {cluster}");
    millis as f64 / 3_600_000.0
}

/// Equal but for floating-point rounding.
pub fn assert_close(actual: &Value, expected: f64, what: &str) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {actual}"));
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: {actual}, expected {expected}"
    );
}

/// `lines` (`by_instance` or `unpriced`) are these instance types and
/// markets with these instance-hours, in this order.
pub fn assert_lines(lines: &Value, expected: &[(&str, &str, f64)]) {
    let lines = lines.as_array().unwrap_or_else(|| panic!("{lines}"));
    assert_eq!(lines.len(), expected.len(), "{lines:?}");
    for (line, (ty, market, hours)) in lines.iter().zip(expected) {
        assert_eq!(line["instance_type"], *ty, "{line}");
        assert_eq!(line["market"], *market, "{line}");
        assert_close(&line["instance_hours"], *hours, "instance-hours");
    }
}
