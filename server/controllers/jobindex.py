"""Indexed Jobs (``completionMode: Indexed``): each of ``completions`` indexes
must succeed once. Pure helpers for the Job controller.

Upstream's conventions: a pod for index ``i`` is ``<job>-<i>-<5 chars>`` with
the annotation and label ``batch.kubernetes.io/job-completion-index: "i"``,
hostname ``<job>-<i>`` (unless the template sets one), and the environment
variable ``JOB_COMPLETION_INDEX`` read from that annotation (downward API) in
every container. ``status.completedIndexes`` lists the succeeded indexes as
compressed intervals, ``"0-2,4"``.
"""
from __future__ import annotations

from typing import Any

from .workloads import meta

Obj = dict[str, Any]

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
ENV_NAME = "JOB_COMPLETION_INDEX"
MAX_COMPLETIONS = 100_000  # upstream's limit for completions and parallelism in Indexed mode


def parse_intervals(text: Any, limit: int) -> set[int]:
    """``"0-2,4"`` -> {0, 1, 2, 4}, keeping indexes below ``limit``; junk is ignored."""
    out: set[int] = set()
    if not isinstance(text, str):
        return out
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            continue
        lo, hi = int(first), int(last or first)
        out.update(range(lo, min(hi, limit - 1) + 1))
    return out


def format_intervals(indexes: set[int]) -> str:
    parts: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def pod_index(pod: Obj, completions: int) -> int | None:
    value = (meta(pod).get("annotations") or {}).get(INDEX_KEY)
    if not isinstance(value, str) or not value.isdigit() or int(value) >= completions:
        return None
    return int(value)


def completed(old_text: Any, pods: list[Obj], completions: int) -> set[int]:
    """Indexes already recorded plus those of pods that succeeded."""
    done = parse_intervals(old_text, completions)
    for pod in pods:
        index = pod_index(pod, completions)
        if index is not None and (pod.get("status") or {}).get("phase") == "Succeeded":
            done.add(index)
    return done


def split_active(active: list[Obj], done: set[int], completions: int) -> tuple[list[Obj], list[str]]:
    """(the active pods to keep: one per unfinished index, oldest first; names of the rest to delete)."""
    keep: dict[int, Obj] = {}
    extra: list[str] = []
    for pod in sorted(active, key=lambda p: (str(meta(p).get("creationTimestamp") or ""), meta(p)["name"])):
        index = pod_index(pod, completions)
        if index is None or index in done or index in keep:
            extra.append(meta(pod)["name"])
        else:
            keep[index] = pod
    return list(keep.values()), extra


def pending(completions: int, done: set[int], active: list[Obj]) -> list[int]:
    """Indexes with neither a success nor a running pod, lowest first."""
    running = {pod_index(p, completions) for p in active}
    return [i for i in range(completions) if i not in done and i not in running]


def indexed_pod(pod: Obj, job_name: str, index: int) -> Obj:
    """Turn a pod made from the template into index ``index``'s pod."""
    m = pod["metadata"]
    m["generateName"] = f"{job_name}-{index}-"
    m["annotations"] = {**(m.get("annotations") or {}), INDEX_KEY: str(index)}
    m["labels"] = {**(m.get("labels") or {}), INDEX_KEY: str(index)}
    spec = pod["spec"]
    if not spec.get("hostname"):
        spec["hostname"] = f"{job_name}-{index}"
    ref = {"fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{INDEX_KEY}']"}}
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            env = c.setdefault("env", [])
            if not any(isinstance(e, dict) and e.get("name") == ENV_NAME for e in env):
                env.append({"name": ENV_NAME, "valueFrom": ref})
    return pod
