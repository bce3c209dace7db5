"""edgectl.lab: reproducible network-namespace labs (routers, NAT, shaped links) on one Linux host.

The public API is :class:`Lab` (see docs/lab.md). Names resolve lazily so
helper processes started with ``python -m edgectl.lab.publish`` stay quick.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Lab, resolve_node
    from .errors import LabError, LabExists, LabNotFound, TopologyError
    from .probe import ProbeResult
    from .topology import Topology, load, parse, parse_text

_EXPORTS = {
    "Lab": "api", "resolve_node": "api",
    "LabError": "errors", "LabExists": "errors", "LabNotFound": "errors", "TopologyError": "errors",
    "ProbeResult": "probe",
    "Topology": "topology", "load": "topology", "parse": "topology", "parse_text": "topology",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)
