"""A loopback OTLP/HTTP trace receiver for the telemetry tests (`..._on_otlp`).

Accepts `POST /v1/traces` with an `application/x-protobuf` body, decodes it as
an `ExportTraceServiceRequest` with PyPI's `opentelemetry-proto` (the
collector's own message definitions), and appends one JSON line per span to
the file given with `--spans` before it answers: once `flow` exits, every
span it exported is in the file. Refuses what a collector refuses: another
path (404), another method (405), another content type (415), a body that is
not the message, or spans with malformed ids or no end (400).

Usage: python otlp_receiver.py --port PORT --spans FILE
"""

import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

LOCK = threading.Lock()


def value(any_value):
    """An AnyValue as plain JSON."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind)


def attributes(pairs):
    return {kv.key: value(kv.value) for kv in pairs}


def spans_of(request, headers):
    """One dict per span, or raise ValueError for a malformed one."""
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8:
                    raise ValueError(f"span {span.name!r}: malformed trace or span id")
                if span.parent_span_id and len(span.parent_span_id) != 8:
                    raise ValueError(f"span {span.name!r}: malformed parent span id")
                if span.end_time_unix_nano < span.start_time_unix_nano:
                    raise ValueError(f"span {span.name!r}: ends before it starts")
                yield {
                    "service": resource.get("service.name"),
                    "scope": scope_spans.scope.name,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": span.kind,
                    "status_code": span.status.code,
                    "status_message": span.status.message,
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano,
                    "attributes": attributes(span.attributes),
                    "authorization": headers.get("Authorization"),
                }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    spans_file = None

    def answer(self, status, body=b"", content_type="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(405, b"POST only")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            return self.answer(404, b"no such path")
        if self.headers.get("Content-Type") != "application/x-protobuf":
            return self.answer(415, b"application/x-protobuf only")
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
            lines = [json.dumps(s) for s in spans_of(request, self.headers)]
        except (DecodeError, ValueError) as e:
            return self.answer(400, str(e).encode())
        with LOCK, open(self.spans_file, "a", encoding="utf-8") as out:
            for line in lines:
                out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
        self.answer(
            200,
            ExportTraceServiceResponse().SerializeToString(),
            "application/x-protobuf",
        )

    def log_message(self, format, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spans", required=True)
    args = parser.parse_args()
    Handler.spans_file = args.spans
    open(args.spans, "w").close()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
