"""Shared test set-up: internal errors of procscope must fail tests, not hide."""

from __future__ import annotations

import os

# Set for the whole session, so child processes started by tests inherit it too.
os.environ["PROCSCOPE_RAISE_INTERNAL_ERRORS"] = "1"
