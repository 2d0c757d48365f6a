//! How a large transfer is cut: parts (S3) or blocks (Azure) of one size
//! covering the object, no more of them than the store allows.

/// The part size for an object of `size` bytes: the setting, or larger
/// when the object would need more than `max_parts` parts. The store
/// clamps it to its own limits.
pub fn fit_part_size(setting: u64, size: u64, max_parts: u64) -> u64 {
    setting.max(size.div_ceil(max_parts))
}

/// `(index, start, end)` of each part of `size` bytes cut every
/// `part_size`, end exclusive, indexes from 0.
pub fn part_ranges(size: u64, part_size: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    (0..size.div_ceil(part_size)).map(move |n| {
        let start = n * part_size;
        (n, start, (start + part_size).min(size))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_object_and_fit_the_limit() {
        assert_eq!(
            part_ranges(10, 4).collect::<Vec<_>>(),
            [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
        );
        assert_eq!(part_ranges(0, 4).count(), 0);
        assert_eq!(fit_part_size(4, 10, 50_000), 4);
        assert_eq!(fit_part_size(4, 50_000 * 4 + 1, 50_000), 5);
    }
}
