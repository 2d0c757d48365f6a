//! The Command API: submission (and what QDS refuses in it), status, the
//! command history, kill and logs.

use super::state::{FakeCommand, ServiceState};
use super::{error, Service};
use crate::server::ok;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Fields every command type takes.
const COMMON: &[&str] = &[
    "command_type",
    "label",
    "name",
    "tags",
    "macros",
    "can_notify",
    "timeout",
    "retry",
    "retry_delay",
    "pool",
];

/// Each command type flow sends, and the fields it takes besides the
/// common ones.
const TYPES: &[(&str, &[&str])] = &[
    (
        "SparkCommand",
        &[
            "program",
            "language",
            "script_location",
            "arguments",
            "user_program_arguments",
            "cmdline",
            "sql",
            "note_id",
            "app_id",
        ],
    ),
    (
        "PigCommand",
        &["latin_statements", "script_location", "parameters"],
    ),
    (
        "ShellCommand",
        &[
            "inline",
            "script_location",
            "files",
            "archives",
            "parameters",
        ],
    ),
    ("HadoopCommand", &["sub_command", "sub_command_args"]),
];

/// The fields whose text a command runs (read for `fake.*` markers).
const TEXT: &[&str] = &[
    "inline",
    "cmdline",
    "program",
    "sql",
    "arguments",
    "user_program_arguments",
    "sub_command_args",
    "latin_statements",
    "script_location",
];

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, "", message.into())
}

fn has(body: &Map<String, Value>, field: &str) -> bool {
    body.get(field)
        .is_some_and(|v| !v.is_null() && v.as_str().is_none_or(|s| !s.trim().is_empty()))
}

/// What QDS refuses in a command body, as its message.
fn refusal(body: &Map<String, Value>) -> Option<String> {
    let Some(kind) = body.get("command_type").and_then(Value::as_str) else {
        return Some("command_type is required".into());
    };
    let Some((_, fields)) = TYPES.iter().find(|(t, _)| *t == kind) else {
        return Some(format!("Unknown command_type: {kind}"));
    };
    if let Some(unknown) = body
        .keys()
        .find(|k| !COMMON.contains(&k.as_str()) && !fields.contains(&k.as_str()))
    {
        return Some(format!("{kind} does not take the parameter {unknown}"));
    }
    for field in ["name", "label"] {
        if let Some(v) = body.get(field) {
            let Some(text) = v.as_str() else {
                return Some(format!("{field} must be a string"));
            };
            if text.len() > 255 {
                return Some(format!("{field} is longer than 255 characters"));
            }
            if field == "name" && text.contains(['&', '<', '>', '"', '\'']) {
                return Some("name must not contain &, <, >, \" or '".into());
            }
        }
    }
    if let Some(tags) = body.get("tags") {
        let ok = tags.as_array().is_some_and(|tags| {
            tags.iter()
                .all(|t| t.as_str().is_some_and(|t| !t.is_empty() && t.len() <= 255))
        });
        if !ok {
            return Some("tags must be an array of strings of at most 255 characters".into());
        }
    }
    let one_of = |fields: &[&str]| {
        let given: Vec<&&str> = fields.iter().filter(|f| has(body, f)).collect();
        (given.len() != 1).then(|| format!("exactly one of {} is required", fields.join(", ")))
    };
    match kind {
        "SparkCommand" => {
            if let Some(e) = one_of(&["program", "script_location", "cmdline", "sql", "note_id"]) {
                return Some(e);
            }
            if has(body, "program") && !has(body, "language") {
                return Some("language is required with program".into());
            }
            if has(body, "cmdline")
                && ["arguments", "user_program_arguments", "language"]
                    .iter()
                    .any(|f| has(body, f))
            {
                return Some("cmdline takes no arguments, user_program_arguments or language: pass them on the command line".into());
            }
            if let Some(location) = body.get("script_location").and_then(Value::as_str) {
                let known = [".py", ".scala", ".R", ".sql", ".cmdline", ".command_line"];
                if !known.iter().any(|ext| location.ends_with(ext)) {
                    return Some(format!(
                        "script_location {location}: the language is not known from its extension (py, scala, R, sql, cmdline)"
                    ));
                }
            }
        }
        "PigCommand" => {
            if let Some(e) = one_of(&["latin_statements", "script_location"]) {
                return Some(e);
            }
            if has(body, "parameters") && !body["parameters"].is_object() {
                return Some("parameters must be an object of name: value".into());
            }
        }
        "ShellCommand" => {
            if let Some(e) = one_of(&["inline", "script_location"]) {
                return Some(e);
            }
            if has(body, "parameters") && !has(body, "script_location") {
                return Some("parameters can only be supplied with a script_location".into());
            }
        }
        "HadoopCommand" => {
            match body.get("sub_command").and_then(Value::as_str) {
                Some("jar" | "s3distcp" | "streaming") => {}
                _ => return Some("sub_command must be one of jar, s3distcp, streaming".into()),
            }
            if !has(body, "sub_command_args") {
                return Some("sub_command_args is required".into());
            }
        }
        _ => {}
    }
    None
}

/// The value of a `fake.KEY=VALUE` marker in `text`.
fn marker<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(&format!("fake.{key}="))? + key.len() + 6;
    let rest = &text[at..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == ',')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `POST /commands`.
pub(super) fn submit(shared: &Service, body: Value) -> Response {
    let Some(fields) = body.as_object() else {
        return invalid("the body must be a JSON object");
    };
    if let Some(message) = refusal(fields) {
        return invalid(message);
    }
    let now = shared.now();
    let o = &shared.options;
    let mut world = shared.world();
    let label = fields
        .get("label")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let Some(cluster) = world.clusters.get_mut(&label) else {
        return invalid(format!("Cluster with label {label} does not exist"));
    };
    // QDS starts a cluster that is down when a command arrives for it.
    cluster.start(now, o.cluster_start);
    let up_at = cluster.up_at(now).unwrap_or(now);
    let mut text = String::new();
    for field in TEXT {
        if let Some(v) = fields.get(*field).and_then(Value::as_str) {
            text.push_str(v);
            text.push(' ');
        }
    }
    if let Some(parameters) = fields.get("parameters") {
        text.push_str(&parameters.to_string());
    }
    let run = match marker(&text, "run_for") {
        Some("forever") => None,
        Some(d) => humantime::parse_duration(d).ok().or(o.command_run),
        None => o.command_run,
    };
    let outcome = if marker(&text, "outcome") == Some("error") {
        "error"
    } else {
        "done"
    };
    let id = world.next_id();
    let command = FakeCommand {
        id,
        body: body.clone(),
        label,
        text: text.trim().to_string(),
        created: now,
        running_at: (now + o.command_waiting).max(up_at),
        run,
        outcome: outcome.into(),
        killed: None,
        forced: None,
        cluster_terminated: false,
    };
    let answer = command_json(&world, &command, now, false);
    world.commands.push(command);
    ok(answer)
}

/// The Command Object as QDS answers it; tags only with
/// `include_query_properties` (and for a single command).
pub(super) fn command_json(
    world: &ServiceState,
    c: &FakeCommand,
    now: Duration,
    with_tags: bool,
) -> Value {
    let (status, since) = c.status(now);
    let progress = match status {
        "waiting" => 0,
        "running" | "cancelling" => 50,
        _ => 100,
    };
    let mut command = Map::new();
    for (k, v) in c.body.as_object().into_iter().flatten() {
        if !COMMON.contains(&k.as_str()) {
            command.insert(k.clone(), v.clone());
        }
    }
    let mut answer = json!({
        "id": c.id,
        "path": format!("/tmp/fake/{}", c.id),
        "status": status,
        "command_type": c.body["command_type"],
        "progress": progress,
        "created_at": world.time(c.created),
        "updated_at": world.time(since),
        "start_time": (status != "waiting").then(|| world.time(c.running_at)),
        "end_time": matches!(status, "done" | "error" | "cancelled").then(|| world.time(since)),
        "label": c.label,
        "name": c.body.get("name").cloned().unwrap_or(Value::Null),
        "can_notify": false,
        "qbol_session_id": 8468029,
        "command": command,
        "meta_data": {
            "results_resource": format!("commands/{}/results", c.id),
            "logs_resource": format!("commands/{}/logs", c.id),
        },
    });
    if with_tags {
        answer["tags"] = c.body.get("tags").cloned().unwrap_or_else(|| json!([]));
    }
    answer
}

fn not_found(id: u64) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "",
        format!("Couldn't find Command with id={id}"),
    )
}

/// `GET /commands/ID`.
pub(super) fn get(shared: &Service, id: u64) -> Response {
    let now = shared.now();
    let world = shared.world();
    match world.commands.iter().find(|c| c.id == id) {
        Some(c) => ok(command_json(&world, c, now, true)),
        None => not_found(id),
    }
}

/// `GET /commands`: the history, newest first, filtered by
/// `cluster_label` and `name`, paged.
pub(super) fn list(shared: &Service, q: &HashMap<String, String>) -> Response {
    let number = |key: &str, default: usize| -> Result<usize, String> {
        match q.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("{key} must be a positive integer")),
        }
    };
    let (page, per_page) = match (number("page", 1), number("per_page", 10)) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(e), _) | (_, Err(e)) => return invalid(e),
    };
    if per_page > 100 {
        return invalid("per_page can be at most 100");
    }
    let with_tags = q
        .get("include_query_properties")
        .is_some_and(|v| v == "true");
    let now = shared.now();
    let world = shared.world();
    let matching: Vec<&FakeCommand> = world
        .commands
        .iter()
        .rev()
        .filter(|c| q.get("cluster_label").is_none_or(|l| *l == c.label))
        .filter(|c| {
            q.get("name")
                .is_none_or(|n| c.body.get("name").and_then(Value::as_str) == Some(n.as_str()))
        })
        .collect();
    let start = (page - 1) * per_page;
    let commands: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(per_page)
        .map(|c| command_json(&world, c, now, with_tags))
        .collect();
    let next_page = (start + per_page < matching.len()).then_some(page + 1);
    ok(json!({
        "paging_info": {
            "next_page": next_page,
            "previous_page": (page > 1).then_some(page - 1),
            "per_page": per_page,
        },
        "commands": commands,
    }))
}

/// `PUT /commands/ID {"status": "kill"}`; a finished command is left as it
/// is.
pub(super) fn kill(shared: &Service, id: u64, body: &Value) -> Response {
    if body.get("status").and_then(Value::as_str) != Some("kill") {
        return invalid("status: only kill is accepted");
    }
    let now = shared.now();
    let takes = shared.options.command_cancel;
    let mut world = shared.world();
    let Some(c) = world.commands.iter_mut().find(|c| c.id == id) else {
        return not_found(id);
    };
    if !c.is_finished(now) && c.killed.is_none() {
        c.killed = Some((now, takes));
    }
    let c = world
        .commands
        .iter()
        .find(|c| c.id == id)
        .expect("found above");
    ok(command_json(&world, c, now, true))
}

/// `GET /commands/ID/logs`: raw text.
pub(super) fn logs(shared: &Service, id: u64) -> Response {
    let now = shared.now();
    let world = shared.world();
    let Some(c) = world.commands.iter().find(|c| c.id == id) else {
        return not_found(id);
    };
    let (status, _) = c.status(now);
    let mut log = String::new();
    if status != "waiting" {
        log.push_str(&format!(
            "fake QDS: {} {} on cluster {}\nfake QDS: running {}\n",
            c.body["command_type"].as_str().unwrap_or(""),
            c.id,
            c.label,
            c.text
        ));
    }
    match status {
        "error" if c.cluster_terminated => log.push_str(&format!(
            "fake QDS: cluster {} was terminated under the command\n",
            c.label
        )),
        "done" => log.push_str("fake QDS: the command finished successfully\n"),
        "error" => log.push_str(
            "Traceback (most recent call last):\n  File \"job\", line 1, in <module>\nRuntimeError: fake.outcome=error: the command failed on purpose\n",
        ),
        "cancelled" => log.push_str("fake QDS: the command was killed\n"),
        _ => {}
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        log,
    )
        .into_response()
}
