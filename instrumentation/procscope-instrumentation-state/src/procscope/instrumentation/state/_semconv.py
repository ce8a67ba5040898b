"""Names of the events and attributes the state instrumentor emits.

docs/semantic-conventions.md ("State instrumentor") describes each of them; the trace DB's
``_state`` module reads them back. Kept in one module so that both sides agree.
"""

from __future__ import annotations

# Event names (span events by default; LogRecord event_name in log mode).
EVENT_CHANGE = "procscope.state.change"
EVENT_SNAPSHOT = "procscope.state.snapshot"
EVENT_TRANSITION = "procscope.state.transition"

# Which object.
OBJECT = "procscope.state.object"  # the object's readable name (indexed by the trace DB)
CLASS = "procscope.state.class"  # its class, module-qualified
SEQ = "procscope.state.seq"  # the object's change counter at this record
# "<object>/<n>": n snapshots of the object were recorded before this event (a snapshot
# carries its own number). Indexed by the trace DB, so that the latest snapshot before an
# instant and the changes after it are index seeks, however long the history.
EPOCH = "procscope.state.epoch"

# What changed (change events).
METHOD = "procscope.state.method"  # method, "(set)"/"(del)" from outside, or trigger
FIELDS = "procscope.state.fields"  # top-level fields changed (snapshots: every field)
FIELD_SEQS = "procscope.state.field_seqs"  # per field: the change counter of its change
VALUES = "procscope.state.values"  # per field: repr of its whole new value (capture only)
OLD_VALUES = "procscope.state.old_values"  # per field: repr of its whole old value (capture)
CHANGE_PATHS = "procscope.state.change.paths"  # inside containers: items[2], cfg['x'], tags{1}
CHANGE_OLD = "procscope.state.change.old"  # per path: old repr (capture only)
CHANGE_NEW = "procscope.state.change.new"  # per path: new repr (capture only)
CHANGE_OMITTED = "procscope.state.change.omitted"  # detail entries left out (limit)

# Snapshots.
SNAPSHOT_REASON = "procscope.state.snapshot.reason"  # start, periodic, resync, renamed, fork

# Transitions (the `transitions` library).
TRIGGER = "procscope.state.transition.trigger"
SOURCE = "procscope.state.transition.source"
DESTINATION = "procscope.state.transition.destination"
MACHINE = "procscope.state.transition.machine"
CONDITIONS_PASSED = "procscope.state.transition.conditions_passed"

# Spans the instrumentor makes when a change happens with no span current.
CODE_FUNCTION = "code.function.name"  # OTel semantic convention (code.*)

# Markers inside VALUES / CHANGE_OLD / CHANGE_NEW.
ABSENT = "<absent>"  # the field or key did not exist (added / deleted)

# The event attributes in which names and values live, for readers.
__all__ = [
    "ABSENT",
    "CHANGE_NEW",
    "CHANGE_OLD",
    "CHANGE_OMITTED",
    "CHANGE_PATHS",
    "CLASS",
    "CODE_FUNCTION",
    "CONDITIONS_PASSED",
    "DESTINATION",
    "EPOCH",
    "EVENT_CHANGE",
    "EVENT_SNAPSHOT",
    "EVENT_TRANSITION",
    "FIELDS",
    "FIELD_SEQS",
    "MACHINE",
    "METHOD",
    "OBJECT",
    "OLD_VALUES",
    "SEQ",
    "SNAPSHOT_REASON",
    "SOURCE",
    "TRIGGER",
    "VALUES",
]
