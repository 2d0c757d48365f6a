//! What only the store's own connection can show: `PRAGMA synchronous` is a
//! per-connection setting, so another connection to the same file cannot
//! tell whether [`SqliteOptions::synchronous`] was applied.

use super::*;

/// `PRAGMA synchronous` as the store's connection (the one every call,
/// inline or on the writer thread, commits through) reports it.
fn synchronous_of(store: &SqliteStore) -> i64 {
    let conn = store.shared.conn.lock().unwrap();
    conn.query_row("PRAGMA synchronous", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn the_synchronous_option_is_applied_to_the_store_connection() {
    let dir = tempfile::tempdir().unwrap();
    // SQLite's numbers: 1 = NORMAL, 2 = FULL. Its built-in default is FULL,
    // so NORMAL shows that the option is applied at all.
    for (synchronous, expected) in [(Synchronous::Normal, 1), (Synchronous::Full, 2)] {
        let path = dir.path().join(format!("{synchronous:?}.db"));
        let store = SqliteStore::open(
            &path,
            SqliteOptions {
                synchronous,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        assert_eq!(synchronous_of(&store), expected, "{synchronous:?}");
        // Reopening an existing file applies it again (it is not stored).
        drop(store);
        let other = match synchronous {
            Synchronous::Normal => Synchronous::Full,
            Synchronous::Full => Synchronous::Normal,
        };
        let store = SqliteStore::open(
            &path,
            SqliteOptions {
                synchronous: other,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            synchronous_of(&store),
            3 - expected,
            "{other:?} after {synchronous:?}"
        );
    }
}

#[test]
fn debug_output_names_the_file_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flow.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(
        format!("{store:?}"),
        format!("SqliteStore {{ path: {path:?}, .. }}")
    );
}
