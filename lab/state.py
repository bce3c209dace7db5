"""The state file of a lab: /run/edgectl-lab/<lab>.json, plus per-node dirs in /run/edgectl-lab/<lab>/.

It is written *before* anything is created (status ``creating``) and updated
as namespaces and processes appear, so ``lab down`` can always find what a
crashed or interrupted ``lab up`` left behind. Writes are atomic (rename).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgectl.paths import LAB_STATE_DIR

from .errors import LabNotFound
from .netns import ProcRef


def state_file(lab: str, root: Path = LAB_STATE_DIR) -> Path:
    return root / f"{lab}.json"


def lab_dir(lab: str, root: Path = LAB_STATE_DIR) -> Path:
    return root / lab


def node_dir(lab: str, node: str, root: Path = LAB_STATE_DIR) -> Path:
    return root / lab / "nodes" / node


@dataclass(kw_only=True)
class NodeState:
    name: str
    kind: str
    netns: str
    anchor: ProcRef | None = None
    role: str = ""  # what the role hook did, e.g. "runs as host until edgectl agent lands"

    def to_doc(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "netns": self.netns,
                "anchor": self.anchor.to_doc() if self.anchor else None, "role": self.role}

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> NodeState:
        a = d.get("anchor")
        return cls(name=d["name"], kind=d["kind"], netns=d["netns"],
                   anchor=ProcRef(pid=a["pid"], start=a["start"]) if a else None, role=d.get("role", ""))


@dataclass(kw_only=True)
class LabState:
    name: str
    source: str
    created: float
    status: str  # creating | up
    token: str  # join token handed to server/agent roles
    topology: dict[str, Any]  # canonical document, see Topology.to_doc()
    switch: NodeState
    nodes: dict[str, NodeState] = field(default_factory=dict)
    forwarder: ProcRef | None = None
    extra_pids: list[ProcRef] = field(default_factory=list)  # role processes and the like

    def to_doc(self) -> dict[str, Any]:
        return {
            "name": self.name, "source": self.source, "created": self.created, "status": self.status,
            "token": self.token, "topology": self.topology, "switch": self.switch.to_doc(),
            "nodes": {k: v.to_doc() for k, v in self.nodes.items()},
            "forwarder": self.forwarder.to_doc() if self.forwarder else None,
            "extra_pids": [p.to_doc() for p in self.extra_pids],
        }

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> LabState:
        fwd = d.get("forwarder")
        return cls(
            name=d["name"], source=d.get("source", ""), created=d.get("created", 0.0), status=d.get("status", "?"),
            token=d.get("token", ""), topology=d.get("topology", {}), switch=NodeState.from_doc(d["switch"]),
            nodes={k: NodeState.from_doc(v) for k, v in d.get("nodes", {}).items()},
            forwarder=ProcRef(pid=fwd["pid"], start=fwd["start"]) if fwd else None,
            extra_pids=[ProcRef(pid=p["pid"], start=p["start"]) for p in d.get("extra_pids", [])],
        )

    def all_netns(self) -> list[str]:
        return [self.switch.netns, *(n.netns for n in self.nodes.values())]


def create(state: LabState, root: Path = LAB_STATE_DIR) -> None:
    """Write a new state file; fails with FileExistsError if the lab exists (O_EXCL closes the race)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_file(state.name, root), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state.to_doc(), f, indent=1)


def save(state: LabState, root: Path = LAB_STATE_DIR) -> None:
    path = state_file(state.name, root)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_doc(), indent=1))
    os.chmod(tmp, 0o600)  # holds the join token
    os.replace(tmp, path)


def load(lab: str, root: Path = LAB_STATE_DIR) -> LabState:
    try:
        return LabState.from_doc(json.loads(state_file(lab, root).read_text()))
    except FileNotFoundError:
        raise LabNotFound(f"no lab named {lab!r} (see `edgectl lab status`)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        why = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise LabNotFound(f"state file {state_file(lab, root)} is damaged ({why}); `edgectl lab down {lab}` removes it") from None


def names(root: Path = LAB_STATE_DIR) -> list[str]:
    try:
        return sorted(p.stem for p in root.glob("*.json"))
    except FileNotFoundError:
        return []


def remove(lab: str, root: Path = LAB_STATE_DIR) -> None:
    import shutil

    shutil.rmtree(lab_dir(lab, root), ignore_errors=True)
    for path in (state_file(lab, root), state_file(lab, root).with_suffix(".tmp")):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
