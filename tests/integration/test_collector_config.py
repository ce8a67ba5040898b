"""The OpenTelemetry Collector pipelines in collector-config/ are valid and match the docs.

No Collector binary runs here (no container engine on the test machines), so the checks
are what `otelcol validate` would refuse plus what a reader of docs/jaeger-tempo.md relies
on: every file parses, every pipeline names only components defined in the file, every
component is a real Collector component, and the ports, endpoints and environment
variables in the docs are exactly those of the files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "collector-config"
DOC = ROOT / "docs" / "jaeger-tempo.md"
CONFIG_FILES = ("agent.yaml", "tempo.yaml", "tail-sampling.yaml")

# The component lists were read from the Collector's own builder manifests:
# open-telemetry/opentelemetry-collector cmd/otelcorecol/builder-config.yaml (core v0.124.0)
# and open-telemetry/opentelemetry-collector-contrib cmd/otelcontribcol/builder-config.yaml
# (contrib v0.123.0); each type name is the `type:` of the component's metadata.yaml.
# Only the components these pipelines use, or could reasonably be edited to use, are here.
COLLECTOR_RELEASE = "opentelemetry-collector v0.124.0 / opentelemetry-collector-contrib v0.123.0"
CORE = "go.opentelemetry.io/collector"
CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib"
KNOWN_COMPONENTS: dict[str, dict[str, str]] = {
    "receivers": {
        "otlp": f"{CORE}/receiver/otlpreceiver",
        "nop": f"{CORE}/receiver/nopreceiver",
        "jaeger": f"{CONTRIB}/receiver/jaegerreceiver",
        "zipkin": f"{CONTRIB}/receiver/zipkinreceiver",
    },
    "processors": {
        "batch": f"{CORE}/processor/batchprocessor",
        "memory_limiter": f"{CORE}/processor/memorylimiterprocessor",
        "tail_sampling": f"{CONTRIB}/processor/tailsamplingprocessor",
        "probabilistic_sampler": f"{CONTRIB}/processor/probabilisticsamplerprocessor",
        "groupbytrace": f"{CONTRIB}/processor/groupbytraceprocessor",
        "attributes": f"{CONTRIB}/processor/attributesprocessor",
        "resource": f"{CONTRIB}/processor/resourceprocessor",
        "filter": f"{CONTRIB}/processor/filterprocessor",
        "transform": f"{CONTRIB}/processor/transformprocessor",
    },
    "exporters": {
        "otlp": f"{CORE}/exporter/otlpexporter",
        "otlphttp": f"{CORE}/exporter/otlphttpexporter",
        "debug": f"{CORE}/exporter/debugexporter",
        "nop": f"{CORE}/exporter/nopexporter",
        "loadbalancing": f"{CONTRIB}/exporter/loadbalancingexporter",
        "zipkin": f"{CONTRIB}/exporter/zipkinexporter",
        "file": f"{CONTRIB}/exporter/fileexporter",
    },
    "extensions": {
        "health_check": f"{CONTRIB}/extension/healthcheckextension",
        "zpages": f"{CORE}/extension/zpagesextension",
        "pprof": f"{CONTRIB}/extension/pprofextension",
    },
    "connectors": {
        "forward": f"{CORE}/connector/forwardconnector",
        "spanmetrics": f"{CONTRIB}/connector/spanmetricsconnector",
        "servicegraph": f"{CONTRIB}/connector/servicegraphconnector",
    },
}
COMPONENT_KINDS = tuple(KNOWN_COMPONENTS)
TOP_LEVEL_KEYS = {*COMPONENT_KINDS, "service"}

# ${env:NAME} or ${env:NAME:-default}, the Collector's environment substitution.
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load(name: str) -> dict[str, Any]:
    with open(CONFIG_DIR / name, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    assert isinstance(config, dict), f"{name}: not a YAML mapping"
    return config


def component_type(component_id: str) -> str:
    """`otlp/jaeger` is an instance of type `otlp` named `jaeger`."""
    return component_id.split("/", 1)[0]


def resolve_env(value: str) -> str:
    """An endpoint as the Collector sees it with none of its environment variables set."""
    return ENV_REF.sub(lambda m: m.group(2) or "", value)


def env_defaults(config: Any) -> dict[str, str]:
    """Every ${env:NAME:-default} in a parsed config, as {NAME: default}."""
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            for m in ENV_REF.finditer(node):
                assert m.group(2), f"${{env:{m.group(1)}}} has no default: the file must run as is"
                found[m.group(1)] = m.group(2)

    walk(config)
    return found


def endpoints(config: dict[str, Any]) -> set[str]:
    """host:port of every receiver, exporter and extension endpoint, and load-balanced backend."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "endpoint" and isinstance(value, str):
                    found.add(resolve_env(value))
                elif key == "hostnames" and isinstance(value, list):
                    found.update(resolve_env(str(v)) for v in value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for kind in ("receivers", "exporters", "extensions"):
        walk(config.get(kind) or {})
    return found


def receiver_ports(config: dict[str, Any], receiver_id: str) -> dict[str, int]:
    """{protocol: port} of an OTLP receiver."""
    protocols = config["receivers"][receiver_id]["protocols"]
    return {
        proto: int(resolve_env(p["endpoint"]).rsplit(":", 1)[1]) for proto, p in protocols.items()
    }


def doc_row(name: str) -> str:
    """The line of the docs' table of collector files that is about ``name``."""
    rows = [
        line
        for line in DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith("|") and f"`collector-config/{name}`" in line.split("|")[1]
    ]
    assert len(rows) == 1, f"docs/jaeger-tempo.md needs one table row for collector-config/{name}"
    return rows[0]


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_file_parses_with_only_collector_sections_and_comments(name: str) -> None:
    """Each file is a YAML mapping of Collector sections and explains itself in comments."""
    config = load(name)
    assert set(config) <= TOP_LEVEL_KEYS, f"{name}: unknown sections {set(config) - TOP_LEVEL_KEYS}"
    assert config["service"]["pipelines"], f"{name}: no pipelines"
    text = (CONFIG_DIR / name).read_text(encoding="utf-8")
    comment_lines = [line for line in text.splitlines() if line.strip().startswith("#")]
    assert len(comment_lines) >= 10, f"{name}: only {len(comment_lines)} comment lines"
    assert COLLECTOR_RELEASE.split()[1] in text, f"{name} should name the release it was checked on"


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_pipelines_use_only_components_the_file_defines_and_define_nothing_unused(
    name: str,
) -> None:
    """Each pipeline's receivers, processors and exporters exist; nothing defined is idle."""
    config = load(name)
    used: dict[str, set[str]] = {kind: set() for kind in COMPONENT_KINDS}
    for pipeline_id, pipeline in config["service"]["pipelines"].items():
        assert component_type(pipeline_id) in ("traces", "metrics", "logs"), pipeline_id
        assert pipeline.get("receivers"), f"{name} {pipeline_id}: no receivers"
        assert pipeline.get("exporters"), f"{name} {pipeline_id}: no exporters"
        for kind in ("receivers", "processors", "exporters"):
            for component_id in pipeline.get(kind) or []:
                defined = config.get(kind) or {}
                assert component_id in defined, (
                    f"{name} {pipeline_id}: {kind} {component_id} undefined"
                )
                used[kind].add(component_id)
    for extension_id in config["service"].get("extensions") or []:
        assert extension_id in (config.get("extensions") or {}), f"{name}: extension {extension_id}"
        used["extensions"].add(extension_id)
    for kind in COMPONENT_KINDS:
        idle = set(config.get(kind) or {}) - used[kind]
        assert not idle, f"{name}: {kind} defined but used by no pipeline: {sorted(idle)}"


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_component_is_a_real_collector_component(name: str) -> None:
    """Each component's type is in the Collector release's component list kept above."""
    config = load(name)
    for kind in COMPONENT_KINDS:
        for component_id in config.get(kind) or {}:
            known = KNOWN_COMPONENTS[kind]
            assert component_type(component_id) in known, (
                f"{name}: {kind} {component_id!r} is not a component of {COLLECTOR_RELEASE}"
            )


@pytest.mark.parametrize("name", ("agent.yaml", "tempo.yaml"))
def test_agent_pipelines_are_otlp_in_memory_limiter_then_batch_and_otlp_out(name: str) -> None:
    """Agent files: OTLP gRPC 4317 and HTTP 4318 in, memory_limiter first, batch last, OTLP out."""
    config = load(name)
    assert receiver_ports(config, "otlp") == {"grpc": 4317, "http": 4318}
    for pipeline in config["service"]["pipelines"].values():
        assert pipeline["processors"][0] == "memory_limiter"
        assert pipeline["processors"][-1] == "batch"
        assert [component_type(e) for e in pipeline["exporters"]] == ["otlp"]
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"], "memory_limiter needs a check_interval"
    assert 0 < limiter["spike_limit_percentage"] < limiter["limit_percentage"] <= 100


def test_tail_sampling_routes_by_trace_id_to_the_gateway_tier_and_mirrors_our_policies() -> None:
    """Tier 1 load-balances by trace id onto tier 2's port; tier 2 keeps errors, slow, a share."""
    config = load("tail-sampling.yaml")
    pipelines = config["service"]["pipelines"]
    route = next(p for p in pipelines.values() if "loadbalancing" in p["exporters"])
    sample = next(p for p in pipelines.values() if "tail_sampling" in (p.get("processors") or []))
    assert "tail_sampling" not in (route.get("processors") or []), "tier 1 must not sample"

    balancer = config["exporters"]["loadbalancing"]
    assert balancer["routing_key"] == "traceID"
    backends = balancer["resolver"]["static"]["hostnames"]
    assert len(backends) >= 2
    tier2_ports = {
        port
        for receiver in sample["receivers"]
        for port in receiver_ports(config, receiver).values()
    }
    tier1_ports = {
        port
        for receiver in route["receivers"]
        for port in receiver_ports(config, receiver).values()
    }
    assert {int(b.rsplit(":", 1)[1]) for b in backends} <= tier2_ports
    assert not tier1_ports & tier2_ports, "the tiers must listen on different ports"

    processors = sample["processors"]
    assert processors[0] == "memory_limiter"
    assert processors.index("tail_sampling") < processors.index("batch")
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"] == 1000  # LatencyPolicy(1.0)
    assert 'name == "exception"' in policies["ottl_condition"]["ottl_condition"]["spanevent"]
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_docs_table_lists_exactly_the_files_endpoints_and_variables(name: str) -> None:
    """The docs row of each file names its endpoints and env variables, and nothing else."""
    config = load(name)
    row = doc_row(name)
    quoted = set(re.findall(r"`([^`]+)`", row))
    documented_endpoints = {q for q in quoted if re.fullmatch(r"[\w.\-]+:\d+", q)}
    assert documented_endpoints == endpoints(config)
    for variable, default in env_defaults(config).items():
        assert variable in quoted, f"docs row for {name} should name {variable}"
        assert default in quoted, f"docs row for {name} should give {variable}'s default"


def test_docs_send_grpc_to_4317_and_http_to_4318_as_the_receivers_listen() -> None:
    """Every OTEL_EXPORTER_OTLP_ENDPOINT in the docs uses the receiver port of its protocol."""
    grpc_port = receiver_ports(load("agent.yaml"), "otlp")["grpc"]
    http_port = receiver_ports(load("agent.yaml"), "otlp")["http"]
    text = DOC.read_text(encoding="utf-8")
    seen = 0
    for line in text.splitlines():
        for url in re.findall(r"OTEL_EXPORTER_OTLP_ENDPOINT=(\S+)", line):
            seen += 1
            port = int(re.search(r":(\d+)", url.split("//", 1)[-1]).group(1))  # type: ignore[union-attr]
            expected = http_port if "http/protobuf" in line else grpc_port
            assert port == expected, f"{line.strip()}: port {port}, expected {expected}"
    assert seen >= 3, "the docs should show the endpoint for Jaeger, Tempo and a collector"
