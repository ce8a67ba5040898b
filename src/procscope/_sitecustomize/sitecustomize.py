"""procscope's start-up hook in every Python that a program under ``procscope run`` starts.

``procscope run`` puts this file's folder first on ``PYTHONPATH``; Python's ``site`` then
imports this module at start-up, in the program and in every Python process it starts:

* In a Python that has procscope installed, OpenTelemetry's auto-instrumentation starts,
  which sets procscope up through its distro (see procscope/_autostart.py).
* In any other Python (another interpreter on ``PATH``, another virtual environment, a
  tool's own Python), nothing at all, silently: the process runs as it would plainly.
  (OpenTelemetry's own sitecustomize, which was used before, fails there with "Error in
  sitecustomize ... No module named 'opentelemetry'" on the process's stderr.)

Either way the ``sitecustomize`` that this one hides, the next one on the path (the
program's own, or the Python distribution's), is run first, as it would have been.

Every Python may import this file, old ones included: no annotations, no f-strings.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _run_the_next_sitecustomize():
    """Import the sitecustomize that this one hides, as ``site`` would have."""
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    this = sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401 -- the next one on the path, if there is one
    except ImportError as exc:
        if getattr(exc, "name", "sitecustomize") != "sitecustomize":
            raise  # from inside the next one: site reports it, as it would plainly
        # None further on. The import machinery reads this module back from sys.modules
        # once this file has run.
        if this is not None:
            sys.modules["sitecustomize"] = this


def _start_procscope():
    try:
        # OpenTelemetry's auto-instrumentation, through procscope's distro, without
        # scanning every installed package again when the parent process already did.
        from procscope._autostart import start
    except ImportError:
        return  # not this Python's: run plainly
    start()


try:
    _run_the_next_sitecustomize()
finally:
    _start_procscope()
