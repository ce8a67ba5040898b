"""The resource ``setup()`` gives each process: what the SDK's own detectors give, run
without the SDK's thread pools."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

COMPARE = """
import json, threading
from opentelemetry.sdk.resources import (
    OsResourceDetector, ProcessResourceDetector, Resource, get_aggregated_resources)
import procscope._pipeline as pipeline

started = []
_start = threading.Thread.start


def start(self):
    started.append(self.name)
    return _start(self)


threading.Thread.start = start
ours = pipeline.build_resource({"procscope.run.id": "r1"})
threads = list(started)
# The SDK's own way, as procscope built it before (its pools: one per call).
sdk = get_aggregated_resources([ProcessResourceDetector(), OsResourceDetector()]).merge(
    Resource.create()).merge(Resource({"procscope.run.id": "r1"}))
print(json.dumps({"ours": dict(ours.attributes), "sdk": dict(sdk.attributes),
                  "schema": [ours.schema_url, sdk.schema_url], "threads": threads}))
"""


def _compare(**env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PROCSCOPE_", "OTEL_"))}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", COMPARE], capture_output=True, text=True,
                          env=environ, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("env", [
    {},
    {"OTEL_SERVICE_NAME": "billing",
     "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=t,process.pid=7"},
    {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,team=core"},
], ids=["defaults", "service-name-and-overrides", "service-name-in-attributes"])
def test_the_resource_is_the_sdks_without_a_thread(env: dict[str, str]) -> None:
    """The same attributes (the program's name as the default service name, the user's
    overrides winning) and schema URL as the SDK's own detectors give, and no thread
    started to get them."""
    seen = _compare(**env)
    assert seen["ours"] == seen["sdk"]
    assert seen["schema"][0] == seen["schema"][1]  # type: ignore[index]
    assert seen["threads"] == []
    if "OTEL_SERVICE_NAME" in env:
        assert seen["ours"]["service.name"] == "billing"  # type: ignore[index]
        assert seen["ours"]["process.pid"] == "7"  # type: ignore[index]


def test_another_detector_is_run_the_sdks_way() -> None:
    """A detector the SDK loads by name (``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS``), which
    might block, runs on the SDK's pool, with its timeout: the same resource, its
    attributes included."""
    seen = _compare(OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="host")
    assert seen["ours"] == seen["sdk"]
    assert "host.name" in seen["ours"]  # type: ignore[operator]
    assert seen["threads"]  # (the SDK's pool)
