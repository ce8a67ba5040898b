"""Starting procscope in each Python that ``procscope run`` starts, without scanning
every installed package each time.

OpenTelemetry's auto-instrumentation (``initialize()``) reads the entry points of every
installed package (five groups) and the metadata of each instrumentor's distribution,
then runs the distro, the configurator and the instrumentors. A program that starts
many Python children pays the same scan, for the same answer, in each one.

The first process does it OpenTelemetry's way. When what it found is procscope's own
distro, configurator (first of its group) and instrumentors alone, with no pre- or
post-instrument hook, it says so in its environment (:data:`ENV_AUTOSTART`), with the
modification times of the folders on ``sys.path`` that hold installed packages. A child
whose package folders are unchanged then does directly what ``initialize()`` would do
with those entry points. Anything else takes OpenTelemetry's way: another instrumentor
installed, another distro or configurator chosen, gevent patching, a package installed
or removed since (its folder's time changes), a folder of packages the first process
did not see.
"""

from __future__ import annotations

import os
import sys

from procscope.core._autostart_env import ENV_AUTOSTART, package_folders, procscope_chosen

from ._instrumentors import INSTRUMENTORS

# (typing, logging and the configurator, which imports OpenTelemetry, are imported where
# used: ``procscope run``'s launcher imports this module for publish_for() alone, and what
# it imports delays every traced program's start)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_DISTRO = "procscope._distro:ProcscopeDistro"
_CONFIGURATOR = "procscope._distro:ProcscopeConfigurator"
# The loggers OpenTelemetry's initialize() reports through, kept for the same messages.
_INIT_LOGGER = "opentelemetry.instrumentation.auto_instrumentation"
_LOAD_LOGGER = "opentelemetry.instrumentation.auto_instrumentation._load"


def start() -> None:
    """Set procscope up as OpenTelemetry's auto-instrumentation would, here; in a Python
    subprocess whose parent allows it, only when the child needs it (``cheap_child``)."""
    from ._mcp import is_server_process

    if is_server_process():
        return  # `procscope mcp` records nothing of itself (see is_server_process)
    from procscope.core import cheap_child

    if not cheap_child.start(_start_now):
        _start_now()


def _start_now() -> None:
    names = _known_instrumentors()
    if names is None:
        from opentelemetry.instrumentation.auto_instrumentation import initialize

        initialize()
        _publish()
    else:
        _start_directly(names)


def _known_instrumentors() -> list[str] | None:
    """The instrumentor names the parent found, if they still hold here; else None."""
    raw = os.environ.get(ENV_AUTOSTART)
    if not raw or not procscope_chosen():
        return None
    import json

    try:
        known = json.loads(raw)
        folders, names = known["folders"], known["instrumentors"]
        if any(folders.get(path) != mtime for path, mtime in package_folders().items()):
            return None
        if all(name in INSTRUMENTORS for name in names):
            return list(names)
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


def _publish() -> None:
    """After OpenTelemetry's initialize(): tell children what it found, if it is
    procscope's own entry points alone."""
    if not procscope_chosen():
        return
    try:
        # Cached by OpenTelemetry from the scan initialize() just made.
        from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

        value = _own_entry_points_only(lambda dist: get_dist_dependency_conflicts(dist) is None)
    except Exception:  # noqa: BLE001 -- children then take OpenTelemetry's way
        return
    if value is not None:
        os.environ[ENV_AUTOSTART] = value


def publish_for(env: dict[str, str]) -> None:
    """In ``procscope run``'s launcher: the same word for the program it starts, so that
    the program too skips OpenTelemetry's distro machinery and entry-point scan (the
    launcher runs from the same installation; a program on another interpreter sees
    other package folders and takes OpenTelemetry's way). Without OpenTelemetry's
    dependency checker (packaging): a distribution that names an ``instruments`` extra
    is left to it."""
    if not procscope_chosen(env):
        return
    import json

    cache = _cache_file()
    folders = package_folders()
    try:
        with open(cache, encoding="utf-8") as file:
            cached = file.read(65536)
        if json.loads(cached)["folders"] == folders:
            env[ENV_AUTOSTART] = cached
            return
    except (OSError, ValueError, TypeError, KeyError):
        pass  # none yet, or unreadable: scan
    try:
        value = _own_entry_points_only(_declares_no_instruments, folders)
    except Exception:  # noqa: BLE001 -- the program then takes OpenTelemetry's way
        return
    if value is not None:
        env[ENV_AUTOSTART] = value
        _write_cache(cache, value)


def _cache_file() -> str:
    """Where the launcher keeps its last answer for this interpreter: the answer holds
    as long as the package folders' modification times do (what children check too),
    and reading it spares the launcher the scan (about 20 ms)."""
    import zlib  # (not hashlib, whose import loads OpenSSL: a few ms)

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = sys.executable.encode("utf-8", "surrogateescape")
    key = f"{zlib.crc32(name):08x}{zlib.adler32(name):08x}"
    return os.path.join(base, "procscope", f"autostart-{key}.json")


def _write_cache(path: str, value: str) -> None:
    """Best effort, atomic (a reader sees the old file or the new one, never half)."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(value)
        os.replace(temporary, path)
    except OSError:
        pass  # a read-only home: scan again next time


def _declares_no_instruments(dist: Any) -> bool:
    """No requirement of ``dist`` under the ``instruments`` extras that OpenTelemetry's
    dependency check reads (procscope's instrumentors declare none)."""
    return not any("instruments" in req for req in (dist.requires or ()) if "extra" in req)


def _own_entry_points_only(no_conflicts: Any, folders: dict[str, int] | None = None) -> str | None:
    """The word for children (folders and instrumentor names) when the installed entry
    points are procscope's distro, configurator (first of its group) and instrumentors
    alone, with no pre- or post-instrument hook; else None."""
    from opentelemetry.util._importlib_metadata import entry_points

    def values(group: str) -> list[tuple[str, str]]:
        return [(ep.name, ep.value) for ep in entry_points(group=group)]

    if values("opentelemetry_pre_instrument") or values("opentelemetry_post_instrument"):
        return None
    if ("procscope", _DISTRO) not in values("opentelemetry_distro"):
        return None
    if values("opentelemetry_configurator")[:1] != [("procscope", _CONFIGURATOR)]:
        return None
    names = []
    for ep in entry_points(group="opentelemetry_instrumentor"):
        module, attribute = INSTRUMENTORS.get(ep.name, ("", ""))
        dist = getattr(ep, "dist", None)
        if ep.value != f"{module}:{attribute}" or dist is None or not no_conflicts(dist):
            return None
        names.append(ep.name)
    if folders is None:
        folders = package_folders()
    import json

    return json.dumps({"folders": folders, "instrumentors": names})


class _OwnEntryPoint:
    """One of procscope's instrumentor entry points, as the distro is handed it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.group = "opentelemetry_instrumentor"
        self.value = "{}:{}".format(*INSTRUMENTORS[name])

    def load(self) -> Any:
        import importlib

        module, attribute = INSTRUMENTORS[self.name]
        return getattr(importlib.import_module(module), attribute)


def _start_directly(names: list[str]) -> None:
    """What initialize() does when the entry points are procscope's alone: the distro,
    the configurator, then each instrumentor not disabled, with the same messages.

    The configurator's setup() switches procscope's instrumentors on as the level asks,
    and procscope's distro then skips each of them (``ProcscopeDistro.load_instrumentor``):
    so the distro object, whose base class costs about 80 ms of imports, is made only
    when setup() did not run.
    """
    import logging

    from opentelemetry.instrumentation.version import __version__

    from ._api import current_scope
    from ._configurator import ProcscopeConfigurator, configure_environment

    load_logger = logging.getLogger(_LOAD_LOGGER)

    try:
        configure_environment()
        ProcscopeConfigurator().configure(auto_instrumentation_version=__version__)
        raw = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")
        excluded = [] if raw is None else [x.strip() for x in raw.split(",")]
        distro: Any = None
        for name in names:
            if "*" in excluded:
                break
            if name in excluded:
                load_logger.debug("Instrumentation skipped for library %s", name)
                continue
            try:
                if current_scope() is None:
                    if distro is None:
                        from ._distro import ProcscopeDistro

                        distro = ProcscopeDistro()
                    distro.load_instrumentor(_OwnEntryPoint(name), skip_dep_check=True)
                load_logger.debug("Instrumented %s", name)
            except ModuleNotFoundError as exc:
                load_logger.debug("Skipping instrumentation %s: %s", name, exc.msg)
            except ImportError:
                load_logger.exception("Importing of %s failed, skipping it", name)
            except Exception:
                load_logger.exception("Instrumenting of %s failed", name)
                raise
    except Exception:  # as initialize(): logged, the program runs on
        logging.getLogger(_INIT_LOGGER).exception("Failed to auto initialize OpenTelemetry")
