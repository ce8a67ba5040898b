"""Helpers shared by every procscope distribution.

This folder is the only copy in the source tree. Each plugin distribution links it into
its own package as ``_common`` (a symlink that the wheel build follows), so that every
plugin installs alone beside the OpenTelemetry packages. Copies loaded under different
module names keep their process-wide state in :mod:`.shared_state`, so they agree.
"""
