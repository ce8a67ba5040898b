"""procscope's spans reach a real OTLP backend, Arize Phoenix, whole: names, tree and links.

examples/otlp_pipeline.py runs under `procscope run --exporter otlp` (a producer thread, a
consumer process started with spawn, three jobs on a multiprocessing queue); its spans are
then read back through Phoenix's REST API, GET /v1/projects/default/spans?trace_id=...
Phoenix does not store span links, so the OTLP/HTTP run passes through a recording proxy
(conftest.otlp_recorder) where the links are checked on the wire, and where every span
sent is compared with what Phoenix stored.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "otlp_pipeline.py"
PROCSCOPE = Path(sys.executable).with_name("procscope")
JOBS = 3
RUN_TIMEOUT_S = 180
READ_TIMEOUT_S = 60

# Straight to 127.0.0.1, whatever HTTP_PROXY says (the example gets NO_PROXY for the same).
LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
NO_PROXY = "127.0.0.1,localhost"

# The first run installs Phoenix (conftest bounds that at 900 s); later ones take ~30 s.
pytestmark = pytest.mark.timeout(1500)


def run_example(
    tmp_path: Path,
    endpoint: str,
    protocol: str,
    service: str,
    timings: dict[str, float],
    disabled: str = "",
    lifecycle_spans: str = "errors",
) -> str:
    """Run the example under procscope with OTLP export; return the trace id it printed."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_SERVICE_NAME=service,
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=disabled,
        PROCSCOPE_LIFECYCLE_SPANS=lifecycle_spans,
        PROCSCOPE_DB=str(tmp_path / "not-used.db"),
        NO_PROXY=NO_PROXY,
        no_proxy=NO_PROXY,
    )
    started = time.monotonic()
    done = subprocess.run(
        [str(PROCSCOPE), "run", "--exporter", "otlp", "--", "python", str(EXAMPLE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    timings[f"example over {protocol}" + (" (instrumentors off)" if disabled else "")] = (
        time.monotonic() - started
    )
    assert done.returncode == 0, done.stderr
    assert f"handled {JOBS} jobs" in done.stdout, done.stdout
    assert "cannot export spans" not in done.stderr, done.stderr
    found = re.search(r"trace id: ([0-9a-f]{32})", done.stdout)
    assert found and int(found.group(1), 16) != 0, done.stdout
    return found.group(1)


def read_spans(phoenix: Any, trace_id: str, at_least: int) -> list[dict[str, Any]]:
    """The trace's spans from Phoenix's REST API, once it holds ``at_least`` and no more come."""
    url = f"{phoenix.base_url}/v1/projects/default/spans?trace_id={trace_id}&limit=1000"
    deadline = time.monotonic() + READ_TIMEOUT_S
    spans: list[dict[str, Any]] = []
    while True:
        previous = len(spans)
        try:
            with LOCAL_HTTP.open(url, timeout=10) as response:
                body = json.load(response)
            assert body["next_cursor"] is None, "more than one page for one small trace"
            spans = body["data"]
        except urllib.error.HTTPError as error:
            assert error.code == 404, f"{url}: HTTP {error.code}"  # no project until a span lands
        # The program has exited, so everything was sent; Phoenix inserts in batches, so
        # wait for the count to reach the minimum and then stay put for one more poll.
        if len(spans) >= at_least and len(spans) == previous:
            return spans
        assert time.monotonic() < deadline, (
            f"Phoenix has {len(spans)} spans of trace {trace_id}, expected at least {at_least}:"
            f" {sorted(s['name'] for s in spans)}\n{phoenix.log_tail()}"
        )
        time.sleep(1.0)


def wire_attributes(span: Any) -> dict[str, Any]:
    """The attributes of a span as it went over the wire (an OTLP protobuf Span)."""
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}


def ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The span's ancestors, nearest first."""
    found = []
    while span["parent_id"] is not None:
        span = by_id[span["parent_id"]]
        found.append(span)
    return found


def names_of(spans: list[dict[str, Any]]) -> list[str]:
    return [span["name"] for span in spans]


def made_by(spans: list[dict[str, Any]], attribute_prefix: str) -> bool:
    """Whether any span carries an attribute of one of procscope's instrumentors."""
    return any(key.startswith(attribute_prefix) for s in spans for key in s["attributes"])


def check_tree(spans: list[dict[str, Any]], trace_id: str) -> dict[str, dict[str, Any]]:
    """The example's spans form one tree under `pipeline`, across the thread and the process.

    Holds with or without procscope's own instrumentors: their spans may sit between the
    example's, never outside the tree.
    """
    by_id = {span["context"]["span_id"]: span for span in spans}
    assert len(by_id) == len(spans), "a span id twice"
    assert {span["context"]["trace_id"] for span in spans} == {trace_id}
    dangling = [s["name"] for s in spans if s["parent_id"] and s["parent_id"] not in by_id]
    assert not dangling, f"spans whose parent never arrived: {dangling}"
    roots = [span["name"] for span in spans if span["parent_id"] is None]
    assert roots == ["pipeline"], f"one root expected, found {roots}"

    names = Counter(span["name"] for span in spans)
    assert (names["pipeline"], names["produce"], names["consume"]) == (1, 1, 1), names
    assert (names["publish"], names["handle"]) == (JOBS, JOBS), names
    named = {span["name"]: span for span in spans}
    assert "pipeline" in names_of(ancestors(named["produce"], by_id))  # the producer thread
    assert "pipeline" in names_of(ancestors(named["consume"], by_id))  # the spawned process
    for name in ("publish", "handle"):
        jobs = sorted(s["attributes"].get("job.number") for s in spans if s["name"] == name)
        assert jobs == list(range(JOBS)), f"{name}: job numbers {jobs}"
    for span in spans:
        if span["name"] == "publish":
            assert by_id[span["parent_id"]]["name"] == "produce"
        if span["name"] == "handle":
            assert "pipeline" in names_of(ancestors(span, by_id))
        assert span["start_time"] <= span["end_time"]
        assert span["status_code"] in ("UNSET", "OK"), f"{span['name']}: {span['status_code']}"
    return by_id


def check_handles(spans: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]) -> None:
    """Each job is handled under the consumer's span, or, when procscope's messaging
    instrumentor is on, inside the trace of its own message: below its `publish` span,
    through procscope's producer and consumer spans (docs/semantic-conventions.md)."""
    publish_of_job = {
        s["attributes"]["job.number"]: s["context"]["span_id"]
        for s in spans
        if s["name"] == "publish"
    }
    messaging = made_by(spans, "messaging.")
    for span in spans:
        if span["name"] != "handle":
            continue
        chain = ancestors(span, by_id)
        if not messaging:
            assert by_id[span["parent_id"]]["name"] == "consume"
            continue
        ids = [s["context"]["span_id"] for s in chain]
        publish_at = ids.index(publish_of_job[span["attributes"]["job.number"]])
        between = chain[:publish_at]
        assert between and all(made_by([s], "messaging.") for s in between), (
            f"handle of job {span['attributes']['job.number']}: {names_of(chain)}"
        )


def check_lifecycle_spans(
    spans: list[dict[str, Any]], by_id: dict[str, dict[str, Any]], thread_spans: bool
) -> None:
    """procscope's own process spans (and thread spans, if asked for) sit between the
    example's spans, as docs/semantic-conventions.md describes."""
    named = {span["name"]: span for span in spans}
    for name in ("spawn consumer", "process consumer", "exit consumer"):
        assert name in named, f"no {name!r} span: {sorted(named)}"
    assert names_of(ancestors(named["consume"], by_id))[:3] == [
        "process consumer",
        "spawn consumer",
        "pipeline",
    ]
    assert names_of(ancestors(named["exit consumer"], by_id))[:2] == ["spawn consumer", "pipeline"]
    assert named["process consumer"]["attributes"]["process.exit.code"] == 0
    # PROCSCOPE_LIFECYCLE_SPANS=errors (the default) makes no span for a thread that ends
    # well, but still carries the context into it.
    produce_parents = names_of(ancestors(named["produce"], by_id))
    if thread_spans:
        assert produce_parents[:2] == ["thread producer", "pipeline"]
    else:
        assert "thread producer" not in named
        assert produce_parents[:1] == ["pipeline"]


def check_procscope_spans(
    spans: list[dict[str, Any]],
    by_id: dict[str, dict[str, Any]],
    instrumentors_on: bool,
    thread_spans: bool = False,
) -> None:
    """What procscope's own instrumentors add: there when they are on, absent when off."""
    assert made_by(spans, "procscope.lifecycle.") == instrumentors_on
    assert made_by(spans, "messaging.") == instrumentors_on
    check_handles(spans, by_id)
    if instrumentors_on:
        check_lifecycle_spans(spans, by_id, thread_spans)


def test_http_protobuf_spans_arrive_whole_with_their_links(
    phoenix: Any, otlp_recorder: Any, tmp_path: Path, e2e_timings: dict[str, float]
) -> None:
    """Over OTLP/HTTP: Phoenix stores every span sent, tree intact; links point at publish spans."""
    trace_id = run_example(
        tmp_path,
        otlp_recorder.endpoint,
        "http/protobuf",
        "otlp-e2e-http",
        e2e_timings,
        lifecycle_spans="all",
    )
    sent = [
        (resource, scope, span)
        for resource, scope, span in otlp_recorder.spans()
        if span.trace_id.hex() == trace_id
    ]
    stored = read_spans(phoenix, trace_id, at_least=len(sent))
    by_id = check_tree(stored, trace_id)

    # What Phoenix stored is exactly what went over the wire: same spans, names, parents.
    on_wire = {(s.span_id.hex(), s.name, s.parent_span_id.hex() or None) for _, _, s in sent}
    in_phoenix = {(s["context"]["span_id"], s["name"], s["parent_id"]) for s in stored}
    assert on_wire == in_phoenix

    # Both processes named the same service and told their own pid.
    assert {resource["service.name"] for resource, _, _ in sent} == {"otlp-e2e-http"}
    pid_of = {span.name: resource["process.pid"] for resource, _, span in sent}
    assert pid_of["handle"] != pid_of["pipeline"], "the consumer ran in its own process"

    # Each handle span is linked to the publish span of its job, in the same trace.
    publish_of_job = {
        by_id[s.span_id.hex()]["attributes"]["job.number"]: s.span_id
        for _, _, s in sent
        if s.name == "publish"
    }
    handles = [s for _, _, s in sent if s.name == "handle"]
    assert len(handles) == JOBS
    for handle in handles:
        job = by_id[handle.span_id.hex()]["attributes"]["job.number"]
        targets = {(link.trace_id.hex(), link.span_id) for link in handle.links}
        assert (trace_id, publish_of_job[job]) in targets, f"handle of job {job}: links {targets}"

    # Every link procscope sent, its own included, points at a span that was sent too.
    wire_ids = {(s.trace_id, s.span_id) for _, _, s in otlp_recorder.spans()}
    for _, _, span in otlp_recorder.spans():
        for link in span.links:
            assert (link.trace_id, link.span_id) in wire_ids, (
                f"{span.name}: link to a span never sent"
            )

    # procscope's receive spans: each a child of its message's send span, and linked to it
    # (docs/semantic-conventions.md, messaging), so a backend that shows links finds it.
    wire_by_id = {s.span_id: s for _, _, s in sent}
    receives = [
        s for _, _, s in sent if wire_attributes(s).get("messaging.operation.type") == "receive"
    ]
    assert len(receives) >= JOBS, "a receive span for every job at least"
    for receive in receives:
        sender = wire_by_id[receive.parent_span_id]
        assert wire_attributes(sender)["messaging.operation.type"] == "send"
        message_id = wire_attributes(receive)["messaging.message.id"]
        assert wire_attributes(sender)["messaging.message.id"] == message_id
        assert (receive.trace_id, sender.span_id) in {
            (k.trace_id, k.span_id) for k in receive.links
        }

    check_procscope_spans(stored, by_id, instrumentors_on=True, thread_spans=True)


PROCSCOPE_INSTRUMENTORS = "procscope_lifecycle,procscope_messaging,procscope_state"


@pytest.mark.parametrize("disabled", ["", PROCSCOPE_INSTRUMENTORS], ids=["full", "api-only"])
def test_grpc_spans_arrive_whole(
    phoenix: Any, tmp_path: Path, e2e_timings: dict[str, float], disabled: str
) -> None:
    """Over OTLP/gRPC (the default protocol), with procscope's instrumentors on and off."""
    endpoint = f"http://127.0.0.1:{phoenix.grpc_port}"
    trace_id = run_example(tmp_path, endpoint, "grpc", "otlp-e2e-grpc", e2e_timings, disabled)
    stored = read_spans(phoenix, trace_id, at_least=3 + 2 * JOBS)  # the example's own spans
    by_id = check_tree(stored, trace_id)
    check_procscope_spans(stored, by_id, instrumentors_on=not disabled)
