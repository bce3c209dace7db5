"""Pod volumes and mounts the agent would refuse at start are refused at create
time instead: 422 Invalid with a cause naming the field, over the real API and
through real ``kubectl apply`` (pods and the pod templates of workloads)."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from edgectl.server.testing import ServerProcess, kubectl_path

PODS = "/api/v1/namespaces/default/pods"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
KUBECTL = "1.33"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("volval"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def pod(name: str, volumes: list[Any], mounts: list[Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox", "volumeMounts": mounts or []}],
                     "volumes": volumes}}


CM = {"name": "v", "configMap": {"name": "cfg"}}
EMPTY = {"name": "v", "emptyDir": {}}


def cm_item(path: str, **extra: Any) -> dict[str, Any]:
    return {"name": "v", "configMap": {"name": "cfg", "items": [{"key": "k", "path": path, **extra}]}}


# (id, volumes, mounts, cause field, message)
BAD: list[tuple[str, list[Any], list[Any], str, str]] = [
    ("item path with ..", [cm_item("../x")], [], "spec.volumes[0].configMap.items[0].path",
     "Invalid value: \"../x\": must not contain '..'"),
    ("item path inner ..", [cm_item("a/../../x")], [], "spec.volumes[0].configMap.items[0].path", "must not contain '..'"),
    ("absolute item path", [cm_item("/etc/passwd")], [], "spec.volumes[0].configMap.items[0].path",
     'Invalid value: "/etc/passwd": must be a relative path'),
    ("reserved item path", [cm_item("..data")], [], "spec.volumes[0].configMap.items[0].path", "must not start with '..'"),
    ("item without key", [{"name": "v", "configMap": {"name": "cfg", "items": [{"path": "a"}]}}], [],
     "spec.volumes[0].configMap.items[0].key", "Required value"),
    ("item mode too big", [cm_item("a", mode=0o1000)], [], "spec.volumes[0].configMap.items[0].mode",
     "Invalid value: 512: must be a number between 0 and 0777 (octal), both inclusive"),
    ("defaultMode negative", [{"name": "v", "secret": {"secretName": "s", "defaultMode": -1}}], [],
     "spec.volumes[0].secret.defaultMode", "must be a number between 0 and 0777 (octal), both inclusive"),
    ("defaultMode a string", [{"name": "v", "configMap": {"name": "cfg", "defaultMode": "0644"}}], [],
     "spec.volumes[0].configMap.defaultMode", "must be a number between 0 and 0777"),
    ("two sources", [{"name": "v", "configMap": {"name": "cfg"}, "emptyDir": {}}], [],
     "spec.volumes[0].configMap", "Forbidden: may not specify more than 1 volume type"),
    ("no source", [{"name": "v"}], [], "spec.volumes[0]", "Required value: must specify a volume type"),
    ("configMap without name", [{"name": "v", "configMap": {}}], [], "spec.volumes[0].configMap.name", "Required value"),
    ("secret without secretName", [{"name": "v", "secret": {"name": "s"}}], [], "spec.volumes[0].secret.secretName",
     "Required value"),
    ("duplicate volume names", [EMPTY, {"name": "v", "emptyDir": {}}], [], "spec.volumes[1].name", 'Duplicate value: "v"'),
    ("mount of a missing volume", [EMPTY], [{"name": "nope", "mountPath": "/m"}],
     "spec.containers[0].volumeMounts[0].name", 'Not found: "nope"'),
    ("relative mountPath", [EMPTY], [{"name": "v", "mountPath": "data"}], "spec.containers[0].volumeMounts[0].mountPath",
     'Invalid value: "data": must be an absolute path'),
    ("duplicate mountPath", [EMPTY], [{"name": "v", "mountPath": "/m"}, {"name": "v", "mountPath": "/m"}],
     "spec.containers[0].volumeMounts[1].mountPath", 'Invalid value: "/m": must be unique'),
    ("subPath with ..", [EMPTY], [{"name": "v", "mountPath": "/m", "subPath": "a/../../etc"}],
     "spec.containers[0].volumeMounts[0].subPath", "must not contain '..'"),
    ("absolute subPath", [EMPTY], [{"name": "v", "mountPath": "/m", "subPath": "/etc"}],
     "spec.containers[0].volumeMounts[0].subPath", 'Invalid value: "/etc": must be a relative path'),
    ("projected source with two kinds", [{"name": "v", "projected": {"sources": [
        {"configMap": {"name": "cfg"}, "secret": {"name": "s"}}]}}], [], "spec.volumes[0].projected.sources[0]",
     "Forbidden: may not specify more than 1 volume type per source"),
    ("projected source with none", [{"name": "v", "projected": {"sources": [{}]}}], [],
     "spec.volumes[0].projected.sources[0]", "Required value: must specify one volume type"),
    ("projected item path", [{"name": "v", "projected": {"defaultMode": 0o644, "sources": [
        {"secret": {"name": "s", "items": [{"key": "k", "path": "../../x"}]}}]}}], [],
     "spec.volumes[0].projected.sources[0].secret.items[0].path", "must not contain '..'"),
    ("downwardAPI item path", [{"name": "v", "downwardAPI": {"items": [
        {"path": "/abs", "fieldRef": {"fieldPath": "metadata.name"}}]}}], [],
     "spec.volumes[0].downwardAPI.items[0].path", "must be a relative path"),
    ("downwardAPI item without a ref", [{"name": "v", "downwardAPI": {"items": [{"path": "n"}]}}], [],
     "spec.volumes[0].downwardAPI.items[0]", "must specify exactly one of fieldRef, resourceFieldRef"),
]


def names(srv: ServerProcess, path: str) -> set[str]:
    code, body = srv.json("GET", path)
    assert code == 200, body
    return {i["metadata"]["name"] for i in body["items"]}


@pytest.mark.parametrize("volumes, mounts, field, message", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_volumes_are_422_naming_the_field(srv: ServerProcess, volumes: list[Any], mounts: list[Any], field: str,
                                              message: str) -> None:
    code, st = srv.json("POST", PODS, pod("vol-bad", volumes, mounts))
    assert code == 422, st
    assert st["kind"] == "Status" and st["reason"] == "Invalid", st
    causes = {c["field"]: c["message"] for c in st["details"]["causes"]}
    assert field in causes and message in causes[field], causes
    assert f"{field}: {causes[field]}" in st["message"], st["message"]
    assert "vol-bad" not in names(srv, PODS)


def test_pod_templates_get_the_same_checks(srv: ServerProcess) -> None:
    template = pod("t", [cm_item("../x")], [{"name": "v", "mountPath": "rel"}])
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "vol-bad-deploy"},
              "spec": {"selector": {"matchLabels": {"app": "x"}},
                       "template": {"metadata": {"labels": {"app": "x"}}, "spec": template["spec"]}}}
    code, st = srv.json("POST", DEPLOYS, deploy)
    assert (code, st["reason"]) == (422, "Invalid"), st
    fields = {c["field"] for c in st["details"]["causes"]}
    assert fields == {"spec.template.spec.volumes[0].configMap.items[0].path",
                      "spec.template.spec.containers[0].volumeMounts[0].mountPath"}, st
    assert "vol-bad-deploy" not in names(srv, DEPLOYS)
    ds = dict(copy.deepcopy(deploy), kind="DaemonSet", metadata={"name": "vol-bad-ds"})
    code, st = srv.json("POST", "/apis/apps/v1/namespaces/default/daemonsets", ds)
    assert (code, st["reason"]) == (422, "Invalid"), st


def test_every_supported_volume_kind_done_right_is_accepted(srv: ServerProcess) -> None:
    volumes = [
        {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 0o440, "optional": True,
                                      "items": [{"key": "app.conf", "path": "conf/app.conf", "mode": 0o400}]}},
        {"name": "sec", "secret": {"secretName": "s", "defaultMode": 0}},
        {"name": "down", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory"}}]}},
        {"name": "proj", "projected": {"defaultMode": 0o777, "sources": [
            {"configMap": {"name": "cfg"}}, {"secret": {"name": "s", "items": [{"key": "k", "path": "a/b.txt"}]}},
            {"serviceAccountToken": {"path": "token"}}]}},
        {"name": "scratch", "emptyDir": None},  # ``emptyDir:`` in YAML
        {"name": "host", "hostPath": {"path": "/srv"}},
        {"name": "claim", "persistentVolumeClaim": {"claimName": "c"}},
    ]
    mounts = [{"name": v["name"], "mountPath": f"/m/{v['name']}"} for v in volumes]
    mounts += [{"name": "cfg", "mountPath": "/etc/app.conf", "subPath": "conf/app.conf"},
               {"name": "scratch", "mountPath": "/deep", "subPath": "a/b..c"}]
    code, obj = srv.json("POST", PODS, pod("vol-good", volumes, mounts))
    assert code == 201, obj
    assert obj["spec"]["volumes"] == volumes  # stored as sent


BAD_MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: vol-kubectl
spec:
  containers:
  - name: c
    image: busybox
    volumeMounts:
    - {name: cfg, mountPath: /etc/app, subPath: ../../etc}
  volumes:
  - name: cfg
    configMap:
      name: app
      defaultMode: 1000
      items:
      - {key: app.conf, path: ../x}
"""


@pytest.mark.skipif(not kubectl_path(KUBECTL).exists(), reason="kubectl binaries not installed")
def test_kubectl_apply_prints_the_field_named_errors(srv: ServerProcess) -> None:
    out = srv.kubectl(KUBECTL, "apply", "-f", "-", input=BAD_MANIFEST, check=False)
    assert out.returncode != 0, out.stdout
    err = out.stderr
    assert 'The Pod "vol-kubectl" is invalid' in err, err
    for line in ("spec.volumes[0].configMap.items[0].path: Invalid value: \"../x\": must not contain '..'",
                 "spec.volumes[0].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 "
                 "(octal), both inclusive",
                 "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../../etc\": must not contain '..'"):
        assert line in err, err
    assert "vol-kubectl" not in names(srv, PODS)
    fixed = BAD_MANIFEST.replace("../../etc", "app.conf").replace("1000", "0644").replace("../x", "app.conf")
    srv.kubectl(KUBECTL, "apply", "-f", "-", input=fixed)
    assert "vol-kubectl" in names(srv, PODS)


def test_misspelt_volume_type_and_mount_field_are_unknown_fields(srv: ServerProcess) -> None:
    bad = pod("vol-typo", [{"name": "v", "configmap": {"name": "cfg"}}], [{"name": "v", "mountpath": "/m"}])
    code, st = srv.json("POST", f"{PODS}?fieldValidation=Strict", bad)
    assert (code, st["reason"]) == (400, "BadRequest"), st
    assert 'unknown field "spec.volumes[0].configmap"' in st["message"], st
    assert 'unknown field "spec.containers[0].volumeMounts[0].mountpath"' in st["message"], st
    # Ignored instead of rejected, the volume has no type left and the mount no path: still refused.
    code, st = srv.json("POST", f"{PODS}?fieldValidation=Ignore", bad)
    assert (code, st["reason"]) == (422, "Invalid"), st
    fields = {c["field"] for c in st["details"]["causes"]}
    assert {"spec.volumes[0]", "spec.containers[0].volumeMounts[0].mountPath"} <= fields, st
    assert "vol-typo" not in names(srv, PODS)
