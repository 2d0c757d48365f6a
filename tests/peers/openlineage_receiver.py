"""An OpenLineage receiver for the lineage tests: Marquez's endpoint shape,
every event validated against the OpenLineage spec as PyPI's
openlineage-python models it, and recorded for the tests to read.

POST /api/v1/lineage   one RunEvent as JSON. Validated strictly by building
                       it from the client's generated models
                       (openlineage.client.generated.*): every field is one
                       the model has, of the model's type, required fields
                       present, the models' validators run (runId a UUID,
                       eventTime an ISO 8601 date-time), eventType one of
                       the spec's, each schemaURL and facet _schemaURL the
                       one the client's model names, the producers
                       absolute URIs, facets only the ones
                       known here (parent, jobType, errorMessage,
                       nominalTime), and every dataset's namespace and name
                       rebuilt by the client's dataset naming helpers
                       (openlineage.client.naming.dataset) to the same
                       strings. Answers 201 (as Marquez does) when valid, 422
                       with the reason otherwise.
POST /api/v1/lineage/batch
                       OpenLineage's postEventBatch: a JSON array of
                       events, each validated as above. A body that is not
                       an array is refused with 400; 200 when every event
                       is valid, 422 naming the invalid ones otherwise.
GET  /_flow_test/events  every event posted so far, in arrival order:
                       [{"valid", "error", "authorization", "event",
                       "request" (the request's number, from 1),
                       "batch" (the events in its request; null for a
                       single-event post), "status" (its answer)}]
                       (test-only).
POST /_flow_test/hold  {"namespace"}: posts holding an event in that job
                       namespace wait unanswered until
POST /_flow_test/release {"namespace"} (or 60 s passed) (test-only: a
                       slow receiver, so events queue behind a post).
POST /_flow_test/refuse {"namespace", "status", "times"}: the next `times`
                       posts holding an event in that namespace are
                       answered `status`, their events recorded (test-only).
GET  /                 200, for the readiness check.

Run: python openlineage_receiver.py -H 127.0.0.1 -p PORT
"""

import argparse
import enum
import json
import threading
import types
import typing
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attr
from openlineage.client.generated import (
    base,
    error_message_run,
    job_type_job,
    nominal_time_run,
    parent_run,
)
from openlineage.client.naming import dataset as naming

RUN_FACETS = {
    "parent": parent_run.ParentRunFacet,
    "errorMessage": error_message_run.ErrorMessageRunFacet,
    "nominalTime": nominal_time_run.NominalTimeRunFacet,
}
JOB_FACETS = {"jobType": job_type_job.JobTypeJobFacet}
FACETS = {base.RunFacet: RUN_FACETS, base.JobFacet: JOB_FACETS}


class Invalid(Exception):
    pass


def build(cls, data, path):
    """An instance of the attrs model `cls` from JSON `data`, strictly."""
    if not isinstance(data, dict):
        raise Invalid(f"{path}: expected an object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attr.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key in ("schemaURL", "_schemaURL"):
            expected = cls._get_schema()
            if value != expected:
                raise Invalid(f"{path}.{key}: {value!r}, the model's is {expected!r}")
            continue
        field = fields.get(key)
        if field is None or not field.init:
            raise Invalid(f"{path}.{key}: no such field in {cls.__name__}")
        kwargs[field.alias] = convert(hints[field.name], value, f"{path}.{key}")
    # Required by the spec's JSON schema though the models default them.
    required = []
    if issubclass(cls, base.BaseEvent):
        required = ["eventTime", "producer", "schemaURL"]
    elif issubclass(cls, base.BaseFacet):
        required = ["_producer", "_schemaURL"]
    for key in required:
        if key not in data:
            raise Invalid(f"{path}: {key} is missing")
        if key.lstrip("_") == "producer":
            uri = urllib.parse.urlparse(data[key]) if isinstance(data[key], str) else None
            if uri is None or not uri.scheme or not uri.netloc:
                raise Invalid(f"{path}.{key}: {data[key]!r} is not an absolute URI")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise Invalid(f"{path}: {cls.__name__}: {e}") from e


def convert(tp, value, path):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise Invalid(f"{path}: must not be null")
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise Invalid(f"{path}: no single type in {tp}")
        return convert(options[0], value, path)
    if value is None:
        raise Invalid(f"{path}: must not be null")
    if origin is list:
        if not isinstance(value, list):
            raise Invalid(f"{path}: expected a list")
        return [convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise Invalid(f"{path}: expected an object")
        item = args[1]
        known = FACETS.get(item)
        if known is None:
            raise Invalid(f"{path}: no facets of {item.__name__} are known here")
        out = {}
        for name, facet in value.items():
            if name not in known:
                raise Invalid(f"{path}.{name}: unknown facet")
            out[name] = build(known[name], facet, f"{path}.{name}")
        return out
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError as e:
            raise Invalid(f"{path}: {e}") from e
    if attr.has(tp):
        return build(tp, value, path)
    if tp is str:
        if not isinstance(value, str):
            raise Invalid(f"{path}: expected a string")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(f"{path}: expected an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise Invalid(f"{path}: expected true or false")
        return value
    raise Invalid(f"{path}: no check for type {tp}")


def named(namespace, name):
    """The dataset rebuilt by the client's naming helpers."""
    scheme, _, authority = namespace.partition("://")
    if namespace == "file":
        return naming.LocalFileSystem(path=name)
    if scheme == "s3":
        return naming.S3(bucket_name=authority, object_key=name)
    if scheme == "gs":
        return naming.GCS(bucket_name=authority, object_key=name)
    if scheme in ("wasbs", "abfss"):
        container, _, host = authority.partition("@")
        service = host.split(".")[0]
        if scheme == "wasbs":
            return naming.WASBS(container=container, service_name=service, object_key=name)
        return naming.ABFSS(container=container, service=service, path=name)
    raise Invalid(f"dataset namespace {namespace!r}: no naming helper for it")


def validate(data):
    event = build(base.RunEvent, data, "event")
    if event.eventType is None:
        raise Invalid("event.eventType is missing")
    if not event.eventTime.endswith("Z") and "+" not in event.eventTime:
        raise Invalid("event.eventTime has no time zone")
    for kind, datasets in (("inputs", event.inputs or []), ("outputs", event.outputs or [])):
        for i, d in enumerate(datasets):
            try:
                helper = named(d.namespace, d.name)
            except ValueError as e:
                raise Invalid(f"event.{kind}[{i}]: {e}") from e
            if (helper.get_namespace(), helper.get_name()) != (d.namespace, d.name):
                raise Invalid(
                    f"event.{kind}[{i}]: the naming spec names it "
                    f"{helper.get_namespace()!r} {helper.get_name()!r}"
                )


def namespaces(events):
    """The job namespaces of the events that name one."""
    return {
        e["job"].get("namespace")
        for e in events
        if isinstance(e, dict) and isinstance(e.get("job"), dict)
    }


class Receiver(BaseHTTPRequestHandler):
    events = []
    requests = 0
    lock = threading.Lock()
    # Namespace -> the event set when its held posts may be answered.
    holds = {}
    # Namespace -> [status, times left].
    refusals = {}

    def log_message(self, format, *args):  # noqa: A002
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        if self.path == "/_flow_test/events":
            with self.lock:
                self.answer(200, self.events)
        elif self.path == "/":
            self.answer(200, {"receiver": "openlineage"})
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        if self.path.startswith("/_flow_test/"):
            self.control(self.path, json.loads(raw))
            return
        if self.path not in ("/api/v1/lineage", "/api/v1/lineage/batch"):
            self.answer(404, {"error": "not found"})
            return
        batch = self.path.endswith("/batch")
        error = None
        data = None
        try:
            if self.headers.get("content-type", "").split(";")[0] != "application/json":
                raise Invalid("content-type is not application/json")
            data = json.loads(raw)
        except (Invalid, ValueError) as e:
            error = str(e)
        if batch and error is None and not isinstance(data, list):
            error = "the body of a batch is not a JSON array of events"
        if batch and error is not None:
            # Nothing to record event by event.
            self.answer(400, {"error": error})
            return
        events = data if batch else [data]
        errors = []
        for event in events:
            try:
                if error is None:
                    validate(event)
                errors.append(error)
            except (Invalid, ValueError) as e:
                errors.append(str(e))
        for ns in namespaces(events):
            with self.lock:
                held = self.holds.get(ns)
            if held is not None:
                held.wait(60)
        status = None
        with self.lock:
            for ns in namespaces(events):
                refusal = self.refusals.get(ns)
                if refusal and refusal[1] > 0:
                    refusal[1] -= 1
                    status = refusal[0]
                    break
            if status is None:
                invalid = [f"[{i}] {e}" for i, e in enumerate(errors) if e is not None]
                status = (422 if invalid else (200 if batch else 201))
            Receiver.requests += 1
            for event, event_error in zip(events, errors):
                self.events.append(
                    {
                        "valid": event_error is None,
                        "error": event_error,
                        "authorization": self.headers.get("authorization"),
                        "event": event,
                        "request": Receiver.requests,
                        "batch": len(events) if batch else None,
                        "status": status,
                    }
                )
        invalid = [f"[{i}] {e}" for i, e in enumerate(errors) if e is not None]
        if status in (200, 201):
            self.answer(status, {})
        elif invalid:
            self.answer(status, {"error": invalid[0] if not batch else invalid})
        else:
            self.answer(status, {"error": "refused as the test asked"})

    def control(self, path, body):
        ns = body["namespace"]
        with self.lock:
            if path == "/_flow_test/hold":
                self.holds[ns] = threading.Event()
            elif path == "/_flow_test/release":
                held = self.holds.pop(ns, None)
                if held is not None:
                    held.set()
            elif path == "/_flow_test/refuse":
                self.refusals[ns] = [int(body["status"]), int(body["times"])]
            else:
                self.answer(404, {"error": "not found"})
                return
        self.answer(200, {})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer((args.host, args.port), Receiver).serve_forever()


if __name__ == "__main__":
    main()
