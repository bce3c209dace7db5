"""QA: pod features the process runtime cannot honour are refused with a clear
reason instead of being dropped silently (the container used to run without its
valueFrom variables, and a hostNetwork pod ran in its own network namespace)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgectl.agent.runtime.interface import ContainerStartError, Sandbox
from edgectl.agent.runtime.process import ProcessRuntime, RuntimeConfig
from edgectl.agent.runtime.spec import parse_pod


def pod(**spec: object) -> dict:
    container = {"name": "c", "image": "x", "command": ["true"]}
    container.update(spec.pop("container", {}))  # type: ignore[arg-type]
    return {"metadata": {"uid": "u1", "name": "p", "namespace": "default"},
            "spec": {"containers": [container], **spec}}


def start(tmp_path: Path, doc: dict) -> None:
    rt = ProcessRuntime(RuntimeConfig(data_dir=tmp_path / "data", log_dir=tmp_path / "log",
                                      cni_conf_dir=tmp_path / "cni", netns_dir=tmp_path / "netns"))
    spec = parse_pod(doc)
    sandbox = Sandbox(id="s", netns_path=str(tmp_path / "netns" / "s"), ips=("10.42.0.9",), data={})
    asyncio.run(rt.start_container(spec, sandbox, spec.containers[0], restart_count=0, env={}))


@pytest.mark.parametrize("doc, fragment", [
    (pod(container={"env": [{"name": "FOO", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
     "env FOO: valueFrom.secretKeyRef is not supported by the process runtime"),
    (pod(container={"env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}),
     "env IP: valueFrom.fieldRef is not supported"),
    (pod(container={"envFrom": [{"configMapRef": {"name": "cm"}}]}), "envFrom is not supported"),
    (pod(hostNetwork=True), "hostNetwork: true is not supported by the process runtime"),
])
def test_unsupported_features_are_refused_before_anything_starts(tmp_path: Path, doc: dict, fragment: str) -> None:
    with pytest.raises(ContainerStartError) as info:
        start(tmp_path, doc)
    assert info.value.reason == "CreateContainerConfigError"
    assert fragment in str(info.value)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("containers"))


def test_plain_values_still_parse() -> None:
    spec = parse_pod(pod(container={"env": [{"name": "A", "value": "1"}]}))
    assert spec.containers[0].unsupported == () and spec.containers[0].env[0].value == "1"
    assert spec.host_network is False
