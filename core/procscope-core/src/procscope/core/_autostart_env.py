"""What a Python start-up reads to know that procscope's own auto-instrumentation is the
whole of it (``procscope._autostart``), shared with cheap children (``cheap_child``),
whose start-up imports nothing but ``os`` and ``sys`` (no ``json``: ``re`` and ``enum``
come with it, about 15 ms)."""

import os
import sys

ENV_AUTOSTART = "PROCSCOPE_AUTOSTART"
_GEVENT_PATCH = "OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH"
_PACKAGE_SUFFIXES = (".dist-info", ".egg-info", ".egg")


def procscope_chosen(environ=None) -> bool:
    """procscope's distro and configurator named, and nothing initialize() would do
    besides (gevent patching; its own folder on PYTHONPATH, which it takes off)."""
    env = os.environ if environ is None else environ
    theirs = os.path.join("opentelemetry", "instrumentation", "auto_instrumentation")
    return (
        env.get("OTEL_PYTHON_DISTRO") == "procscope"
        and env.get("OTEL_PYTHON_CONFIGURATOR") == "procscope"
        and _GEVENT_PATCH not in env
        and not any(
            p.rstrip(os.sep).endswith(theirs) for p in env.get("PYTHONPATH", "").split(os.pathsep)
        )
    )


def package_folders() -> dict:
    """The entries of sys.path where installed packages' metadata can be (a folder
    holding any, a zip file), with their modification times."""
    found = {}
    for entry in sys.path:
        path = os.path.abspath(entry or os.curdir)
        try:
            stat = os.stat(path)
            if os.path.isdir(path) and not any(
                name.endswith(_PACKAGE_SUFFIXES) for name in os.listdir(path)
            ):
                continue
        except OSError:
            continue  # missing: nothing can be found there
        found[path] = stat.st_mtime_ns
    return found


def folders_unchanged(published: str) -> bool:
    """Whether every package folder here is in ``published`` (the JSON text of
    ``ENV_AUTOSTART``) with the same modification time, read without ``json``: a folder
    whose name JSON would escape counts as changed (the full start-up then decides)."""
    for path, mtime in package_folders().items():
        if any(c in path for c in '"\\') or not path.isascii() or not path.isprintable():
            return False
        if f'"{path}": {mtime}' not in published:
            return False
    return True
