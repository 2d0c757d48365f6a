//! Settings keys that were renamed, refused at load with their new name.
//!
//! The cloud clusters share one vocabulary (`docs/src/reference/settings.md`,
//! "One vocabulary for every cloud cluster"); keys that meant the same idea
//! under another word were renamed. The crates are 0.x, so an old key is
//! not an alias: the file is refused at the old key's `file:line:col`,
//! naming the new key, before the sections are read (a build without the
//! cluster's feature refuses it too, so one file behaves the same in every
//! build).
//!
//! One table for every section: a cluster kind or filesystem that renames a
//! key adds a row here, nothing else.

use toml::de::{DeTable, DeValue};

/// One renamed key.
struct Renamed {
    /// The table, dotted; `*` matches any one key (`cluster.*.s3`: the S3
    /// filesystem of every cluster kind).
    section: &'static str,
    old: &'static str,
    /// The key now, dotted when it moved into a table.
    new: &'static str,
    /// What else changed with the name, if anything.
    note: &'static str,
}

const fn renamed(section: &'static str, old: &'static str, new: &'static str) -> Renamed {
    Renamed {
        section,
        old,
        new,
        note: "",
    }
}

/// Every renamed key, by section.
const RENAMED: &[Renamed] = &[
    renamed("cluster.emr", "endpoint_url", "endpoint"),
    renamed("cluster.emr", "step_logs", "job_logs"),
    Renamed {
        section: "cluster.emr",
        old: "max_attempts",
        new: "retry.max_retries",
        note: " (a [cluster.emr.retry] table; it counts the retries after the first attempt: max_attempts - 1)",
    },
    renamed("cluster.emr", "initial_backoff", "retry.initial_delay"),
    renamed("cluster.*.s3", "endpoint_url", "endpoint"),
    Renamed {
        section: "cluster.*.s3",
        old: "max_attempts",
        new: "retry.max_retries",
        note: " (a retry table; it counts the retries after the first attempt: max_attempts - 1)",
    },
    renamed("cluster.dataproc", "cluster_name", "name"),
    renamed("cluster.dataproc", "delete_reused", "terminate_reused"),
    renamed("cluster.dataproc", "cluster_poll_interval", "launch_poll"),
    renamed("cluster.dataproc", "driver_output", "job_logs"),
];

/// The first renamed key of `text` (in file order): its byte offset and
/// the message. `None` when there is none, or when the text is not TOML
/// (the settings parser reports that).
pub(crate) fn first_renamed(text: &str) -> Option<(usize, String)> {
    let root = DeTable::parse(text).ok()?;
    let mut found: Vec<(usize, String)> = Vec::new();
    for rename in RENAMED {
        let segments: Vec<&str> = rename.section.split('.').collect();
        let mut path = Vec::new();
        visit(root.get_ref(), &segments, &mut path, &mut |table, path| {
            if let Some((key, _)) = table
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == rename.old)
            {
                found.push((
                    key.span().start,
                    format!(
                        "[{}] `{}` was renamed to `{}`{}",
                        path.join("."),
                        rename.old,
                        rename.new,
                        rename.note
                    ),
                ));
            }
        });
    }
    found.into_iter().min_by_key(|(offset, _)| *offset)
}

/// Calls `at` with every table under `table` that `segments` names.
fn visit(
    table: &DeTable<'_>,
    segments: &[&str],
    path: &mut Vec<String>,
    at: &mut dyn FnMut(&DeTable<'_>, &[String]),
) {
    let Some((first, rest)) = segments.split_first() else {
        at(table, path);
        return;
    };
    for (key, value) in table.iter() {
        if *first != "*" && key.get_ref().as_ref() != *first {
            continue;
        }
        if let DeValue::Table(inner) = value.get_ref() {
            path.push(key.get_ref().to_string());
            visit(inner, rest, path, at);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Option<(usize, usize, String)> {
        first_renamed(text).map(|(offset, message)| {
            let (line, column) = crate::exit::line_col(text, offset);
            (line, column, message)
        })
    }

    #[test]
    fn an_old_key_is_found_where_it_is_written_however_the_table_is_written() {
        assert_eq!(
            at("[cluster.emr]\nname = \"x\"\nendpoint_url = \"http://h\"\n"),
            Some((
                3,
                1,
                "[cluster.emr] `endpoint_url` was renamed to `endpoint`".into()
            ))
        );
        assert_eq!(
            at("[cluster]\ndataproc = { project = \"p\", cluster_name = \"c\" }\n")
                .map(|(l, c, _)| (l, c)),
            Some((2, 29))
        );
        let (line, _, message) =
            at("[cluster.emr]\n[cluster.emr.s3]\nbucket = \"b\"\nendpoint_url = \"x\"\n").unwrap();
        assert_eq!(line, 4);
        assert_eq!(
            message,
            "[cluster.emr.s3] `endpoint_url` was renamed to `endpoint`"
        );
        let (_, _, message) = at("[cluster.qubole.s3]\nmax_attempts = 2\n").unwrap();
        assert!(
            message.starts_with(
                "[cluster.qubole.s3] `max_attempts` was renamed to `retry.max_retries`"
            ),
            "{message}"
        );
    }

    #[test]
    fn the_first_in_file_order_is_named_and_new_keys_pass() {
        let (line, _, message) = at(
            "[cluster.dataproc]\ndelete_reused = true\n[cluster.emr]\nstep_logs = { enabled = false }\n",
        )
        .unwrap();
        assert_eq!(line, 2);
        assert!(message.contains("`terminate_reused`"), "{message}");
        assert_eq!(
            at("[cluster.emr]\nendpoint = \"x\"\n[cluster.emr.retry]\nmax_retries = 1\n[cluster.dataproc]\nname = \"c\"\nlaunch_poll = \"1s\"\n"),
            None
        );
        // An old word elsewhere is not a renamed key.
        assert_eq!(at("[settings]\nendpoint_url = \"x\"\n"), None);
        assert_eq!(at("not toml ["), None);
    }
}
