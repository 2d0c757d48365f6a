"""moto, with a test-only handle on EMR steps.

Runs moto's ThreadedMotoServer (S3, EMR and the rest: one real moto) with a
small WSGI layer in front of it, because moto never moves an EMR step (the
first stays RUNNING, the others PENDING, forever), answers CancelSteps with
500, gives no FailureDetails and is laxer than EMR. The layer adds, and
only adds:

- CancelSteps as EMR's API reference describes it: at most 256 StepIds, a
  StepCancellationOption of SEND_INTERRUPT (the default) or
  TERMINATE_PROCESS. A PENDING step becomes CANCEL_PENDING, then CANCELLED a
  moment later; so does a RUNNING one with TERMINATE_PROCESS (SIGKILL), and
  with SEND_INTERRUPT (SIGTERM) unless the test marked the step as ignoring
  SIGTERM (`"ignores_interrupt": true` below): that one keeps RUNNING, as a
  process that does not stop on SIGTERM does on EMR. Answered like EMR
  (CancelStepsInfoList).
- ListSteps refuses more than ten StepIds (ValidationException), as EMR does.
- A cluster that ends (TerminateJobFlows, or a test setting TERMINATING,
  TERMINATED or TERMINATED_WITH_ERRORS) ends its steps as EMR does: PENDING
  ones CANCELLED, RUNNING ones INTERRUPTED.
- FailureDetails on steps and a Code on cluster state-change reasons, set
  through the control endpoints below.
- Request counting per EMR action and cluster, throttling injection
  (ThrottlingException), "lost answers" (the request takes effect, the
  client gets a 500), and refusals (the request does not take effect, the
  client gets the error named), so tests count requests instead of timing
  them.
- NormalizedInstanceHours as a test sets it (moto never moves it from 0),
  through the control endpoint below.
- Launch failures: the next RunJobFlow of a cluster of a given name makes
  the cluster, which then ends TERMINATED_WITH_ERRORS with the reason code
  and message given (as a failed bootstrap action ends an EMR cluster,
  BOOTSTRAP_FAILURE).

Control endpoints (JSON; test-only, under /_flow_test/):
  GET  /_flow_test/requests[?cluster=ID]    {"counts": {"ListSteps": 3, ...}}
  GET  /_flow_test/clusters                  [{"id", "name", "state", "master_dns"}]
  GET  /_flow_test/steps?cluster=ID          [{"id", "name", "state", "jar", "args", "action_on_failure"}]
  POST /_flow_test/bucket   {"name"}         creates an S3 bucket
  GET  /_flow_test/objects?bucket=B          [keys]
  POST /_flow_test/step     {"cluster_id", "step_id", "state"?, "failure": {...}, "logs": {"stderr": "..."},
                             "ignores_interrupt"?}   (an EMR step state, else 400)
  POST /_flow_test/cluster  {"cluster_id", "state", "code", "message"}   (an EMR cluster state, else 400)
  POST /_flow_test/usage    {"cluster_id", "normalized_instance_hours"}   (what DescribeCluster
                             reports; moto leaves it 0)
  POST /_flow_test/throttle {"action", "count", "cluster_id"?}   (cluster_id: an id or a name,
                                             here and in lose_answer and fail)
  POST /_flow_test/lose_answer {"action", "count", "cluster_id"?}
  POST /_flow_test/fail     {"action", "count", "cluster_id"?, "status"?, "code", "message"}
  POST /_flow_test/heal     {"cluster_id"?}   drops the injections above not used up yet
  POST /_flow_test/launch_failure {"name", "count"?, "code", "message"}

Usage: python moto_emr.py [-H 127.0.0.1] [-p PORT]
"""

import argparse
import gzip
import io
import json
import os
import sys
import threading
import time
from collections import defaultdict

from moto.emr import models as emr_models
from moto.emr.models import emr_backends
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import s3_backends
from werkzeug.serving import make_server

# moto's account when clients send test credentials.
DEFAULT_ACCOUNT = "123456789012"

TERMINAL_STEP_STATES = {"COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED"}
# EMR's StepState and ClusterState values.
STEP_STATES = TERMINAL_STEP_STATES | {"PENDING", "CANCEL_PENDING", "RUNNING"}
CLUSTER_STATES = {
    "STARTING",
    "BOOTSTRAPPING",
    "RUNNING",
    "WAITING",
    "TERMINATING",
    "TERMINATED",
    "TERMINATED_WITH_ERRORS",
}
ENDED_CLUSTER_STATES = {"TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"}
CANCELLATION_OPTIONS = {"SEND_INTERRUPT", "TERMINATE_PROCESS"}
# EMR's limits: StepIds per ListSteps and per CancelSteps.
MAX_LIST_STEP_IDS = 10
MAX_CANCEL_STEP_IDS = 256


# --- What moto's EMR models lack -------------------------------------------

_step_status = emr_models.Step.status.fget
_cluster_status = emr_models.Cluster.status.fget


def step_status(self):
    status = _step_status(self)
    details = getattr(self, "flow_failure_details", None)
    if details:
        status["FailureDetails"] = details
    return status


def cluster_status(self):
    status = _cluster_status(self)
    code = getattr(self, "flow_reason_code", None)
    if code:
        status["StateChangeReason"]["Code"] = code
    return status


emr_models.Step.status = property(step_status)
emr_models.Cluster.status = property(cluster_status)


def find_cluster(cluster_id):
    for account_id, regions in dict.items(emr_backends):
        for _region, backend in dict.items(regions):
            if cluster_id in backend.clusters:
                return account_id, backend.clusters[cluster_id]
    return None, None


def all_clusters():
    for _account_id, regions in dict.items(emr_backends):
        for _region, backend in dict.items(regions):
            yield from backend.clusters.values()


def find_step(cluster, step_id):
    for step in cluster.steps:
        if step.id == step_id:
            return step
    return None


def promote_next(cluster):
    """EMR starts the next pending step once one ends (moto never does)."""
    if any(s.state == "RUNNING" for s in cluster.steps):
        return
    pending = sorted(
        (s for s in cluster.steps if s.state == "PENDING"),
        key=lambda s: s.creation_date_time,
    )
    if pending:
        pending[0].state = "RUNNING"


# --- The layer ---------------------------------------------------------------


class Layer:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        # (action, cluster_id or "") -> count
        self.counts = defaultdict(int)
        # action -> list of [remaining, cluster_id or None]
        self.throttles = defaultdict(list)
        self.lost = defaultdict(list)
        # action -> list of [remaining, cluster_id or None, (status, code, message)]
        self.failures = defaultdict(list)
        # cluster name -> list of [remaining, (code, message)]
        self.launch_failures = defaultdict(list)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_flow_test/"):
            return self.control(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith("ElasticMapReduce."):
            return self.app(environ, start_response)
        action = target.split(".", 1)[1]
        body = read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = {}
        clusters = request_clusters(data)
        # Injections name a cluster by id or by name (RunJobFlow's too).
        named = clusters | cluster_names(clusters)
        if action == "RunJobFlow" and data.get("Name"):
            named.add(data["Name"])
        with self.lock:
            self.counts[(action, "")] += 1
            for cluster_id in clusters:
                self.counts[(action, cluster_id)] += 1
            throttled = self.take(self.throttles, action, named)
            lose = self.take(self.lost, action, named)
            refusal = self.take(self.failures, action, named)
        if refusal:
            status, code, message = refusal
            return json_answer(start_response, status, {"__type": code, "message": message})
        if throttled:
            return json_answer(
                start_response,
                "400 Bad Request",
                {"__type": "ThrottlingException", "message": "Rate exceeded (flow test)"},
            )
        invalid = validation_error(action, data)
        if invalid:
            return json_answer(
                start_response,
                "400 Bad Request",
                {"__type": "ValidationException", "message": invalid},
            )
        if action == "RunJobFlow" and not lose:
            with self.lock:
                failure = self.take(self.launch_failures, data.get("Name"), set())
            if failure:
                return launch_and_fail(self.app, environ, start_response, failure)
        if action == "CancelSteps":
            answer = cancel_steps(data)
        else:
            answer = None
        if answer is not None:
            return json_answer(start_response, "200 OK", answer)
        if action == "TerminateJobFlows":
            # moto's answer, then the steps of the clusters it ended.
            chunks = collect(self.app(environ, (lambda *a, **k: None) if lose else start_response))
            for cluster_id in data.get("JobFlowIds") or []:
                _, cluster = find_cluster(cluster_id)
                if cluster is not None and cluster.state in ENDED_CLUSTER_STATES:
                    end_steps(cluster)
            if lose:
                return json_answer(
                    start_response,
                    "500 Internal Server Error",
                    {"__type": "InternalServerError", "message": "answer lost (flow test)"},
                )
            return chunks
        if lose:
            # Let moto do it, then lose the answer.
            drain(self.app(environ, lambda *a, **k: None))
            return json_answer(
                start_response,
                "500 Internal Server Error",
                {"__type": "InternalServerError", "message": "answer lost (flow test)"},
            )
        return self.app(environ, start_response)

    @staticmethod
    def take(table, action, clusters):
        """Uses up one injection of `action`: its payload (or True), or None."""
        for entry in table.get(action, []):
            remaining, cluster_id = entry[0], entry[1]
            if remaining > 0 and (cluster_id is None or cluster_id in clusters):
                entry[0] -= 1
                return entry[2] if len(entry) > 2 else True
        return None

    def control(self, environ, start_response):
        path = environ["PATH_INFO"][len("/_flow_test/"):]
        query = dict(
            part.split("=", 1)
            for part in environ.get("QUERY_STRING", "").split("&")
            if "=" in part
        )
        method = environ.get("REQUEST_METHOD", "GET")
        data = json.loads(read_body(environ) or b"{}") if method == "POST" else {}
        try:
            answer = self.route(method, path, query, data)
        except LookupError as e:
            return json_answer(start_response, "404 Not Found", {"error": str(e)})
        except (KeyError, ValueError, TypeError) as e:
            return json_answer(start_response, "400 Bad Request", {"error": repr(e)})
        return json_answer(start_response, "200 OK", answer)

    def route(self, method, path, query, data):
        if method == "GET" and path == "requests":
            cluster_id = query.get("cluster", "")
            with self.lock:
                counts = {a: n for (a, c), n in self.counts.items() if c == cluster_id}
            return {"counts": counts}
        if method == "GET" and path == "clusters":
            return [
                {
                    "id": c.id,
                    "name": c.name,
                    "state": c.state,
                    "master_dns": c.master_public_dns_name,
                }
                for c in all_clusters()
            ]
        if method == "GET" and path == "steps":
            _, cluster = find_cluster(query["cluster"])
            if cluster is None:
                raise LookupError(f"no cluster {query['cluster']}")
            return [
                {
                    "id": s.id,
                    "name": s.name,
                    "state": s.state,
                    "jar": s.jar,
                    "main_class": s.hadoop_jar_step.get("MainClass"),
                    "args": s.args,
                    "action_on_failure": s.action_on_failure,
                }
                for s in sorted(cluster.steps, key=lambda s: s.creation_date_time)
            ]
        if method == "POST" and path == "bucket":
            backend = s3_backends[DEFAULT_ACCOUNT]["global"]
            if data["name"] not in backend.buckets:
                backend.create_bucket(data["name"], "us-east-1")
            return {"ok": True}
        if method == "GET" and path == "objects":
            backend = s3_backends[DEFAULT_ACCOUNT]["global"]
            return sorted(backend.get_bucket(query["bucket"]).keys.keys())
        if method == "POST" and path == "step":
            return set_step(data)
        if method == "POST" and path == "usage":
            # What EMR reports as it bills: moto keeps 0 forever.
            _, cluster = find_cluster(data["cluster_id"])
            if cluster is None:
                raise LookupError(f"no cluster {data['cluster_id']}")
            hours = data["normalized_instance_hours"]
            if not isinstance(hours, int) or hours < 0:
                raise ValueError("normalized_instance_hours is a whole number of at least 0")
            cluster.normalized_instance_hours = hours
            return {"ok": True}
        if method == "POST" and path == "cluster":
            account_id, cluster = find_cluster(data["cluster_id"])
            if cluster is None:
                raise LookupError(f"no cluster {data['cluster_id']}")
            if data["state"] not in CLUSTER_STATES:
                raise ValueError(f"{data['state']!r} is not an EMR cluster state")
            cluster.state = data["state"]
            cluster.last_state_change_reason = data.get("message")
            cluster.flow_reason_code = data.get("code")
            if cluster.state in ENDED_CLUSTER_STATES:
                end_steps(cluster)
            return {"ok": True}
        if method == "POST" and path in ("throttle", "lose_answer"):
            table = self.throttles if path == "throttle" else self.lost
            with self.lock:
                table[data["action"]].append([int(data["count"]), data.get("cluster_id")])
            return {"ok": True}
        if method == "POST" and path == "heal":
            cluster_id = data.get("cluster_id")
            with self.lock:
                for table in (self.throttles, self.lost, self.failures):
                    for entries in table.values():
                        entries[:] = [e for e in entries if cluster_id not in (None, e[1])]
            return {"ok": True}
        if method == "POST" and path == "launch_failure":
            reason = (data["code"], data["message"])
            with self.lock:
                self.launch_failures[data["name"]].append([int(data.get("count", 1)), None, reason])
            return {"ok": True}
        if method == "POST" and path == "fail":
            status = int(data.get("status", 400))
            reason = {400: "Bad Request", 403: "Forbidden", 500: "Internal Server Error"}
            refusal = (f"{status} {reason.get(status, 'Error')}", data["code"], data["message"])
            with self.lock:
                self.failures[data["action"]].append(
                    [int(data["count"]), data.get("cluster_id"), refusal]
                )
            return {"ok": True}
        raise LookupError(f"no control endpoint {method} {path}")


def set_step(data):
    account_id, cluster = find_cluster(data["cluster_id"])
    if cluster is None:
        raise LookupError(f"no cluster {data['cluster_id']}")
    step = find_step(cluster, data["step_id"])
    if step is None:
        raise LookupError(f"no step {data['step_id']}")
    state = data.get("state", step.state)
    if state not in STEP_STATES:
        raise ValueError(f"{state!r} is not an EMR step state")
    if "ignores_interrupt" in data:
        step.flow_ignores_interrupt = bool(data["ignores_interrupt"])
    step.state = state
    if data.get("failure"):
        failure = data["failure"]
        step.flow_failure_details = {
            key: failure[name]
            for key, name in (("Reason", "reason"), ("Message", "message"), ("LogFile", "log_file"))
            if failure.get(name)
        }
    if data.get("reason"):
        step.last_state_change_reason = data["reason"]
    logs = data.get("logs") or {}
    if logs:
        if not cluster.log_uri:
            raise ValueError("the cluster has no log URI")
        bucket, _, prefix = cluster.log_uri.split("://", 1)[1].partition("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        backend = s3_backends[account_id]["global"]
        for name, text in logs.items():
            key = f"{prefix}{cluster.id}/steps/{step.id}/{name}.gz"
            backend.put_object(bucket, key, gzip.compress(text.encode()))
    if step.state in TERMINAL_STEP_STATES:
        promote_next(cluster)
    return {"ok": True}


def validation_error(action, data):
    """What EMR's request validation refuses in `data`, or None."""
    if action == "ListSteps":
        ids = data.get("StepIds") or []
        if len(ids) > MAX_LIST_STEP_IDS:
            return (
                f"1 validation error detected: Value '{ids}' at 'stepIds' failed to satisfy "
                f"constraint: Member must have length less than or equal to {MAX_LIST_STEP_IDS}"
            )
    if action == "CancelSteps":
        ids = data.get("StepIds") or []
        if len(ids) > MAX_CANCEL_STEP_IDS:
            return (
                f"1 validation error detected: Value at 'stepIds' failed to satisfy "
                f"constraint: Member must have length less than or equal to {MAX_CANCEL_STEP_IDS}"
            )
        option = data.get("StepCancellationOption", "SEND_INTERRUPT")
        if option not in CANCELLATION_OPTIONS:
            return (
                f"1 validation error detected: Value '{option}' at 'stepCancellationOption' "
                f"failed to satisfy constraint: Member must satisfy enum value set: "
                f"[SEND_INTERRUPT, TERMINATE_PROCESS]"
            )
    return None


def launch_and_fail(app, environ, start_response, failure):
    """moto's RunJobFlow, then the new cluster ends TERMINATED_WITH_ERRORS
    with `failure` (code, message) as its state change reason."""
    captured = {}

    def capture(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, headers

    chunks = collect(app(environ, capture))
    answer = json.loads(b"".join(chunks) or b"{}")
    _, cluster = find_cluster(answer.get("JobFlowId", ""))
    if cluster is not None:
        cluster.state = "TERMINATED_WITH_ERRORS"
        cluster.flow_reason_code, cluster.last_state_change_reason = failure
    start_response(captured["status"], captured["headers"])
    return chunks


def end_steps(cluster):
    """EMR ends the steps of a cluster that ends: pending ones are
    cancelled, running ones interrupted."""
    for step in cluster.steps:
        if step.state in ("PENDING", "CANCEL_PENDING"):
            step.state = "CANCELLED"
        elif step.state == "RUNNING":
            step.state = "INTERRUPTED"


def cancel_steps(data):
    _, cluster = find_cluster(data.get("ClusterId", ""))
    if cluster is None:
        return None  # moto answers for an unknown cluster
    option = data.get("StepCancellationOption", "SEND_INTERRUPT")
    infos = []
    for step_id in data.get("StepIds", []):
        step = find_step(cluster, step_id)
        if step is None:
            infos.append({"StepId": step_id, "Status": "FAILED", "Reason": "no such step"})
        elif (
            step.state == "RUNNING"
            and option == "SEND_INTERRUPT"
            and getattr(step, "flow_ignores_interrupt", False)
        ):
            # SIGTERM sent; the process carries on.
            infos.append({"StepId": step_id, "Status": "SUBMITTED", "Reason": ""})
        elif step.state in ("PENDING", "RUNNING", "CANCEL_PENDING"):
            step.state = "CANCEL_PENDING"
            threading.Timer(0.3, finish_cancel, (cluster, step)).start()
            infos.append({"StepId": step_id, "Status": "SUBMITTED", "Reason": ""})
        else:
            infos.append(
                {"StepId": step_id, "Status": "FAILED", "Reason": f"the step is {step.state}"}
            )
    return {"CancelStepsInfoList": infos}


def finish_cancel(cluster, step):
    if step.state == "CANCEL_PENDING":
        step.state = "CANCELLED"
        promote_next(cluster)


def request_clusters(data):
    ids = [data.get("ClusterId"), data.get("JobFlowId")] + list(data.get("JobFlowIds") or [])
    return {i for i in ids if i}


def cluster_names(cluster_ids):
    names = set()
    for cluster_id in cluster_ids:
        _, cluster = find_cluster(cluster_id)
        if cluster is not None:
            names.add(cluster.name)
    return names


def read_body(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length else b""


def collect(iterable):
    """The chunks of a WSGI answer, read now (so its effects have happened)."""
    try:
        return list(iterable)
    finally:
        close = getattr(iterable, "close", None)
        if close:
            close()


def drain(iterable):
    try:
        for _ in iterable:
            pass
    finally:
        close = getattr(iterable, "close", None)
        if close:
            close()


def json_answer(start_response, status, value):
    body = json.dumps(value, default=str).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]


class Server(ThreadedMotoServer):
    """ThreadedMotoServer with the layer in front of moto's application."""

    def _server_entry(self):
        app = Layer(DomainDispatcherApplication(create_backend_app))
        try:
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
        except OSError as e:
            # A port taken meanwhile: exit, so the harness tries another.
            print(f"cannot listen on {self._ip_address}:{self._port}: {e}", file=sys.stderr)
            os._exit(1)
        self._server_ready_event.set()
        self._server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    server = Server(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    print(f"moto with the EMR test layer on http://{args.host}:{args.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
        return 0


if __name__ == "__main__":
    sys.exit(main())
