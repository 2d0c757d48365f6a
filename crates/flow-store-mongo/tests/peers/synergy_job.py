"""Synergy Scheduler 2.3's own Job model, both ways, for synergy_jobs.rs.

stdin: {"ours": <a Job document flow wrote, _id as hex text>}
stdout: {"read": <what Synergy's model read from it, after validate()>,
         "written": <the document Synergy's model writes for a Job of its own>}
"""
import json
import sys

from synergy.db.model import job as model

given = json.load(sys.stdin)
ours = model.Job.from_json(given["ours"])
ours.validate()
read = {
    "db_id": ours.db_id,
    "process_name": ours.process_name,
    "timeperiod": ours.timeperiod,
    "state": ours.state,
    "related_unit_of_work": ours.related_unit_of_work,
    "event_log": ours.event_log,
    "number_of_failures": ours.number_of_failures,
    "is_active": ours.is_active,
    "is_finished": ours.is_finished,
}

theirs = model.Job(
    process_name="synergy_written",
    timeperiod="2026112800",
    state=model.STATE_EMBRYO,
    related_unit_of_work="5f1d7a2b9c3e4d5a6b7c8d9e",
    event_log=["created by Synergy"],
    number_of_failures=2,
)
theirs.validate()
json.dump({"read": read, "written": theirs.document}, sys.stdout)
