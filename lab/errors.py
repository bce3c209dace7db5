"""Lab errors: all are user errors (one line on the CLI, non-zero exit)."""
from __future__ import annotations

from edgectl.errors import EdgectlError


class LabError(EdgectlError):
    """Something about a lab the user can act on (exists, not found, a node failed)."""


class TopologyError(LabError):
    """A bad topology file; the message names the file, line and field."""

    exit_code = 2


class LabExists(LabError):
    pass


class LabNotFound(LabError):
    pass
