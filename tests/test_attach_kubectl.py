"""attach end to end: real kubectl against a one-node lab (``edgectl server``
with its embedded agent running pods through real shims), through the
server's pods/attach proxy and the node's tunnel to the kubelet.

- ``kubectl run -i --rm ... --restart=Never`` with piped input (websocket v5
  with 1.33, SPDY with 1.27): the container reads it, stdinOnce closes it,
  the pod is removed and kubectl exits with the container's code;
- ``kubectl run -it --rm`` (1.33 and 1.27) and ``kubectl attach -it`` to a
  running tty pod, on a pty: the shell sees kubectl's terminal size;
- ``kubectl attach -i`` to a running pod, across an agent restart (the shim
  keeps the console) and a container restart (a new console; the old
  session ends).
- a pod without ``stdin: true``: ``kubectl attach`` streams its output,
  ``kubectl attach -i`` gets the kubelet's BadRequest.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgectl.lab import cluster
from edgectl.lab.testing import down, need_root, up

pytestmark = [pytest.mark.lab]

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
NODE = "srv"
WAIT = 60.0  # guards against hangs only; nothing asserts on time

if not (KUBECTL_DIR / "kubectl.1.33").exists() or not (KUBECTL_DIR / "kubectl.1.27").exists():
    pytest.skip("needs kubectl 1.27 and 1.33", allow_module_level=True)

TOPOLOGY = {
    "name": "attach",
    "networks": {"net": {"cidr": "198.18.41.0/24"}},
    "nodes": {NODE: {"kind": "server", "networks": {"net": "198.18.41.10"}, "publish": ["6443:16443"]}},
}


class Cluster:
    def __init__(self, lab: Any, cache: Path) -> None:
        self.lab, self.cache = lab, cache
        self.kubeconfig = cluster.kubeconfig_for(lab)

    def argv(self, *args: str, version: str = "1.33") -> list[str]:
        return [str(KUBECTL_DIR / f"kubectl.{version}"), "--kubeconfig", str(self.kubeconfig),
                "--cache-dir", str(self.cache / version), *args]

    def kubectl(self, *args: str, version: str = "1.33", input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(self.argv(*args, version=version), capture_output=True, text=True, input=input,
                             timeout=WAIT)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
        return res

    def pod(self, name: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "pod", name, "-o", "json").stdout)

    def apply_pod(self, name: str, command: list[str], **container: Any) -> None:
        manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                    "spec": {"terminationGracePeriodSeconds": 1,
                             "containers": [{"name": "main", "image": "x", "command": command, **container}]}}
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def wait_pod(self, name: str, check: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while True:
            pod = self.pod(name)
            if check(pod):
                return pod
            assert time.monotonic() < deadline, f"pod {name}: {what}; status {json.dumps(pod.get('status'))}"
            time.sleep(0.2)

    def wait_running(self, name: str, restarts: int = 0) -> dict[str, Any]:
        def ok(pod: dict[str, Any]) -> bool:
            statuses = pod.get("status", {}).get("containerStatuses") or [{}]
            return "running" in statuses[0].get("state", {}) and statuses[0].get("restartCount") == restarts
        return self.wait_pod(name, ok, f"not running with {restarts} restarts")


@pytest.fixture(scope="module")
def kc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    need_root()
    lab = up(TOPOLOGY, prefix="attach")
    try:
        yield Cluster(lab, tmp_path_factory.mktemp("attach-kubectl"))
    finally:
        down(lab)


@pytest.mark.parametrize("version", ["1.33", "1.27"])
def test_kubectl_run_i_rm_with_piped_input(kc: Cluster, version: str) -> None:
    name = f"dbg-pipe-{version.replace('.', '')}"
    res = kc.kubectl("run", "-i", "--rm", name, "--image=x", "--restart=Never", "--command", "--",
                     "sh", "-c", "read x; echo got:$x; read y || echo stdin-closed; exit 3",
                     version=version, input="hello\n", check=False)
    assert "got:hello\nstdin-closed\n" in res.stdout, (res.stdout, res.stderr)
    assert res.returncode == 3, (res.returncode, res.stderr)  # the container's exit code, from the pod
    gone = kc.kubectl("get", "pod", name, "--ignore-not-found", "-o", "name").stdout
    assert gone == "", gone  # --rm


def _spawn_on_pty(argv: list[str], *, rows: int, cols: int) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    return proc, master


def _read_until(master: int, seen: bytearray, text: bytes) -> None:
    deadline = time.monotonic() + WAIT
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} never came; terminal showed {bytes(seen)!r}"
        if select.select([master], [], [], left)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: kubectl is gone
                data = b""
            assert data, f"{text!r} never came; terminal showed {bytes(seen)!r}"
            seen += data


@pytest.mark.parametrize("version", ["1.33", "1.27"])
def test_kubectl_run_it_rm_gets_a_terminal_of_the_right_size(kc: Cluster, version: str) -> None:
    name = f"dbg-tty-{version.replace('.', '')}"
    proc, master = _spawn_on_pty(kc.argv("run", "-it", "--rm", name, "--image=x", "--restart=Never",
                                         "--command", "--", "sh", version=version), rows=33, cols=111)
    seen = bytearray()
    try:
        _read_until(master, seen, b"try pressing enter")
        os.write(master, b"\r")  # a new prompt proves the session is up (and the size is sent before it)
        _read_until(master, seen, b"# ")
        os.write(master, b"stty size; tty; echo a$((40+2))b; exit 7\r")
        _read_until(master, seen, b"a42b")
        assert proc.wait(WAIT) == 7, bytes(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = seen.decode(errors="replace")
    assert "33 111" in text and "/dev/pts/" in text, text
    assert kc.kubectl("get", "pod", name, "--ignore-not-found", "-o", "name").stdout == ""


def test_kubectl_attach_it_to_a_running_tty_pod(kc: Cluster) -> None:
    kc.apply_pod("shell", ["sh"], stdin=True, tty=True)
    kc.wait_running("shell")
    proc, master = _spawn_on_pty(kc.argv("attach", "-it", "shell", version="1.27"), rows=40, cols=120)  # SPDY
    seen = bytearray()
    try:
        _read_until(master, seen, b"try pressing enter")
        os.write(master, b"\r")
        _read_until(master, seen, b"# ")
        os.write(master, b"stty size; echo term=$TERM; exit 4\r")
        _read_until(master, seen, b"term=xterm")
        assert proc.wait(WAIT) == 0, bytes(seen)  # the console ended with the container; attach reports no code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert "40 120" in seen.decode(errors="replace"), bytes(seen)
    pod = kc.wait_running("shell", restarts=1)  # restartPolicy Always: a new instance
    assert pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 4
    kc.kubectl("delete", "pod", "shell", "--wait=false")


class Attach:
    """``kubectl attach -i`` with a pipe for stdin, read line by line."""

    def __init__(self, kc: Cluster, pod: str, version: str) -> None:
        self.proc = subprocess.Popen(kc.argv("attach", "-i", pod, version=version), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, line: str) -> None:
        assert self.proc.stdout is not None
        while True:
            ready = select.select([self.proc.stdout], [], [], WAIT)[0]
            assert ready, f"no {line!r} from kubectl attach"
            got = self.proc.stdout.readline().decode()
            assert got, f"kubectl attach ended before {line!r}: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
            if got.rstrip("\n") == line:
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=WAIT)


def test_kubectl_attach_survives_agent_restart_and_follows_container_restart(kc: Cluster) -> None:
    kc.apply_pod("talk", ["sh", "-c", 'while read l; do [ "$l" = quit ] && exit 1; echo got:$l; done'], stdin=True)
    kc.wait_running("talk")
    first = Attach(kc, "talk", "1.27")  # SPDY
    try:
        first.say("one")  # waits in the pipe until kubectl's session is up
        first.expect("got:one")
    finally:
        first.stop()

    cluster.stop_role(kc.lab, NODE)  # the agent (embedded in the server) goes away; the shim stays
    cluster.start_role(kc.lab, NODE)
    kc.wait_running("talk")  # still restartCount 0: the same container instance, adopted
    kc.wait_pod("talk", lambda _: kc.kubectl("logs", "talk", check=False).returncode == 0,
                "the node's kubelet is not reachable again (tunnel)")

    second = Attach(kc, "talk", "1.33")  # websocket
    try:
        second.say("two")
        second.expect("got:two")
        second.say("quit")  # the container exits: this console ends, and so does the session
        assert second.proc.wait(WAIT) == 0
    finally:
        second.stop()

    kc.wait_running("talk", restarts=1)  # a new instance with a new console
    third = Attach(kc, "talk", "1.33")
    try:
        third.say("three")
        third.expect("got:three")
    finally:
        third.stop()
    kc.kubectl("delete", "pod", "talk", "--wait=false")


def test_kubectl_attach_without_stdin_streams_output_and_refuses_i(kc: Cluster) -> None:
    kc.apply_pod("quiet", ["sh", "-c", "while sleep 0.2; do echo tick; done"])
    kc.wait_running("quiet")
    res = kc.kubectl("attach", "-i", "quiet", input="x\n", check=False)
    assert res.returncode == 1 and "was not created with stdin: true" in res.stderr, res.stderr
    proc = subprocess.Popen(kc.argv("attach", "quiet", version="1.27"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and select.select([proc.stdout], [], [], WAIT)[0]
        assert proc.stdout.readline() == b"tick\n"  # output only, from the moment of attaching
    finally:
        proc.kill()
        proc.communicate(timeout=WAIT)
    kc.kubectl("delete", "pod", "quiet", "--wait=false")
