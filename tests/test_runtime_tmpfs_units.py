"""Pure parts of the medium-Memory volumes: mountinfo parsing and tmpfs sizes."""
from __future__ import annotations

import pytest

from edgectl.agent.runtime import tmpfs
from edgectl.agent.runtime.spec import parse_pod
from edgectl.agent.runtime.volumes import VolumeError, memory_backed, memory_size

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /var/lib/edgectl/pods/u1/volumes/sec rw,nosuid,nodev,relatime - tmpfs tmpfs rw,size=1024k,mode=755
31 22 0:41 / /var/lib/edgectl/pods/u1/volumes/my\\040vol rw,nosuid,nodev - tmpfs tmpfs rw
32 22 0:42 / /var/lib/edgectl/pods/u10/volumes/sec rw - tmpfs tmpfs rw
33 30 0:43 / /var/lib/edgectl/pods/u1/volumes/sec/inner rw - tmpfs tmpfs rw
"""


def test_mountinfo_parsing_unescapes_and_lists_a_tree_deepest_first() -> None:
    assert tmpfs.mounts(MOUNTINFO)[2] == ("/var/lib/edgectl/pods/u1/volumes/my vol", "tmpfs")
    # u10 is not under u1; the nested mount comes before its parent.
    assert tmpfs.under(MOUNTINFO, "/var/lib/edgectl/pods/u1/") == [
        "/var/lib/edgectl/pods/u1/volumes/sec/inner", "/var/lib/edgectl/pods/u1/volumes/my vol",
        "/var/lib/edgectl/pods/u1/volumes/sec"]
    assert tmpfs.options(size=0, mode=0o755) == "mode=0755,size=4096"  # never 0: that is unlimited


def pod(volumes: list[dict], limits: list[str | None], init: str | None = None) -> object:
    containers = [{"name": f"c{i}", "command": ["true"],
                   **({"resources": {"limits": {"memory": m}}} if m else {})} for i, m in enumerate(limits)]
    spec = {"containers": containers, "volumes": volumes}
    if init:
        spec["initContainers"] = [{"name": "i", "command": ["true"], "resources": {"limits": {"memory": init}}}]
    return parse_pod({"metadata": {"name": "p", "namespace": "d", "uid": "u"}, "spec": spec})


@pytest.mark.parametrize("volume, limits, init, want", [
    ({"name": "v", "secret": {"secretName": "s"}}, ["10Mi", "6Mi"], None, 16 << 20),  # the pod's limit
    ({"name": "v", "secret": {"secretName": "s"}}, ["10Mi", None], None, 1 << 30),  # a container without: node
    ({"name": "v", "secret": {"secretName": "s"}}, ["10Mi"], "64Mi", 64 << 20),  # a larger init container
    ({"name": "v", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}, ["10Mi"], None, 1 << 20),
    ({"name": "v", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}, [None], None, 1 << 30),  # capped
    ({"name": "v", "emptyDir": {"medium": "Memory"}}, ["3Gi"], None, 1 << 30),  # above the node: the node
])
def test_tmpfs_size_follows_kubelet(volume: dict, limits: list, init: str | None, want: int) -> None:
    p = pod([volume], limits, init)
    assert memory_size(p, p.volumes[0], node_memory=1 << 30) == want  # type: ignore[attr-defined]


def test_which_volumes_are_memory_backed_and_bad_size_limits() -> None:
    p = pod([{"name": "s", "secret": {"secretName": "s"}}, {"name": "pr", "projected": {"sources": []}},
             {"name": "c", "configMap": {"name": "c"}}, {"name": "d", "downwardAPI": {"items": []}},
             {"name": "e", "emptyDir": {}}, {"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "lots"}}],
            [None])
    assert [v.name for v in p.volumes if memory_backed(v)] == ["s", "pr", "m"]  # type: ignore[attr-defined]
    with pytest.raises(VolumeError, match="emptyDir.sizeLimit: 'lots' is not a quantity"):
        memory_size(p, p.volumes[5], node_memory=1 << 30)  # type: ignore[attr-defined]
