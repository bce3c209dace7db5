"""attach: the shim's console (pty or stdin pipe, attach socket, stdinOnce)
driven over its socket protocol, then the kubelet's /attach over websocket
v5/v4 and SPDY, with real shims running real shells (in their own PID, mount
and UTS namespaces; the node's network, so no netns is needed)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from edgectl.agent.kubelet import client as kc
from edgectl.agent.kubelet.server import KubeletConfig, KubeletServer
from edgectl.agent.kubelet.testing import StaticPods
from edgectl.agent.runtime import attachproto as ap
from edgectl.agent.runtime import crilog
from edgectl.agent.runtime.interface import ContainerAttach
from edgectl.agent.runtime.shim import proc_start_ticks
from edgectl.agent.streams import channels as ch
from edgectl.server.pki import issue  # tests may use server code; agent code never does

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the shim unshares namespaces: needs root")

SHIM = Path(__file__).resolve().parent.parent / "agent" / "runtime" / "shim.py"
WAIT = 15.0  # guards against hangs only; nothing asserts on time


# --- a container run by a real shim -------------------------------------------------------

@dataclass
class Shim:
    dir: Path
    report: dict[str, Any]

    @property
    def socket(self) -> str:
        return str(self.dir / ap.SOCKET_NAME)

    @property
    def pid(self) -> int:
        return int(self.report["pid"])

    def exit(self) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while not (self.dir / "exit.json").exists():
            assert time.monotonic() < deadline, "the container did not end"
            time.sleep(0.02)
        return json.loads((self.dir / "exit.json").read_text())

    def log(self) -> list[crilog.LogRecord]:
        return [crilog.parse_line(line) for line in (self.dir / "0.log").read_bytes().splitlines(keepends=True)]

    def kill(self) -> None:
        for pid_key, start_key in (("pid", "pid_start"), ("shim_pid", "shim_start")):
            pid = int(self.report.get(pid_key) or 0)
            if pid and proc_start_ticks(pid) == self.report.get(start_key):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def shim(root: Path, script: str, *, tty: bool = False, stdin: bool = False, stdin_once: bool = False) -> Iterator[Shim]:
    # A long directory on purpose: the socket path then exceeds sockaddr_un (108 bytes).
    cdir = root / ("c" * 60) / os.urandom(16).hex()
    cdir.mkdir(parents=True)
    spec = {"name": "main", "argv": ["sh", "-c", script], "env": {"PATH": os.environ["PATH"], "TERM": "xterm"},
            "workingDir": "/", "hostname": "attach-test", "netns": "", "mounts": [], "log": str(cdir / "0.log"),
            "exit": str(cdir / "exit.json"), "attach": str(cdir / ap.SOCKET_NAME),
            "stdin": stdin, "stdinOnce": stdin_once, "tty": tty}
    (cdir / "spec.json").write_text(json.dumps(spec))
    with open(cdir / "shim.log", "ab") as err:
        out = subprocess.run([sys.executable, "-E", "-S", str(SHIM), str(cdir / "spec.json")], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=err, timeout=WAIT, check=True)
    s = Shim(cdir, json.loads(out.stdout))
    assert "pid" in s.report, s.report
    try:
        yield s
    finally:
        s.kill()


class Attacher:
    """A blocking client of the attach socket (the kubelet's job, by hand)."""

    def __init__(self, path: str, *, stdin: bool = False, stdout: bool = True, stderr: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with ap.short_unix_path(path) as name:
            self.sock.connect(name)
        self.sock.settimeout(WAIT)
        self.decoder = ap.FrameDecoder()
        self.frames: list[tuple[int, bytes]] = []
        self.seen: list[tuple[int, bytes]] = []
        self.eof = False
        self.send(ap.encode_json(ap.HELLO, {"stdin": stdin, "stdout": stdout, "stderr": stderr}))
        self.first = self.next_frame()

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def next_frame(self) -> tuple[int, bytes]:
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                self.eof = True
                raise EOFError("the shim closed the connection")
            self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    def output(self, kind: int = ap.STDOUT) -> bytes:
        return b"".join(p for k, p in self.seen if k == kind)

    def until(self, predicate: Any) -> None:
        """Read frames until ``predicate(self)``; the shim closing first fails."""
        while not predicate(self):
            self.seen.append(self.next_frame())

    def until_text(self, text: bytes, kind: int = ap.STDOUT) -> None:
        self.until(lambda a: text in a.output(kind))

    def until_exit(self) -> int:
        self.until(lambda a: any(k == ap.EXIT for k, _ in a.seen))
        code = next(json.loads(p)["exit_code"] for k, p in self.seen if k == ap.EXIT)
        with contextlib.suppress(EOFError):
            while True:
                self.seen.append(self.next_frame())
        return int(code)

    def close(self) -> None:
        self.sock.close()


# --- the frame codec ------------------------------------------------------------------------

def test_frames_split_anywhere_and_bad_frames_are_errors() -> None:
    stream = (ap.encode_json(ap.HELLO, {"stdin": True}) + ap.encode(ap.STDIN, b"abc") + ap.encode_resize(80, 24)
              + ap.encode(ap.STDIN_EOF))
    dec, frames = ap.FrameDecoder(), []
    for i in range(len(stream)):
        frames += dec.feed(stream[i:i + 1])
    assert [k for k, _ in frames] == [ap.HELLO, ap.STDIN, ap.RESIZE, ap.STDIN_EOF]
    assert ap.stream_payload(frames[0][1]) == {"stdin": True, "stdout": False, "stderr": False}
    assert frames[1][1] == b"abc" and ap.decode_resize(frames[2][1]) == (80, 24)
    with pytest.raises(ap.AttachProtocolError):
        ap.FrameDecoder().feed(bytes([99, 0, 0, 0, 0]))
    with pytest.raises(ap.AttachProtocolError):
        ap.FrameDecoder().feed(ap.HEADER.pack(ap.STDIN, ap.MAX_PAYLOAD + 1))
    with pytest.raises(ap.AttachProtocolError):
        ap.stream_payload(b'{"stdin": "yes"}')


# --- the shim's console ---------------------------------------------------------------------

def test_tty_console_output_stdin_resize_and_stdin_once_eof(tmp_path: Path) -> None:
    with shim(tmp_path, "exec sh -i", tty=True, stdin=True, stdin_once=True) as c:
        assert oct(os.stat(c.socket).st_mode & 0o777) == "0o600"
        a = Attacher(c.socket, stdin=True, stderr=False)
        assert a.first[0] == ap.WELCOME and json.loads(a.first[1]) == {"tty": True, "stdin": True, "stdin_closed": False}
        watcher = Attacher(c.socket)  # a second attacher reads the same output
        a.send(ap.encode_resize(111, 33))
        a.send(ap.encode(ap.STDIN, b"stty size; tty; echo term=$TERM\n"))
        a.until_text(b"term=xterm\r\n")
        out = a.output().decode()
        assert "33 111\r\n" in out and "/dev/pts/" in out, out
        watcher.until_text(b"33 111")
        a.send(ap.encode_resize(90, 20))
        a.send(ap.encode(ap.STDIN, b"stty size\n"))
        a.until_text(b"20 90")
        a.send(ap.encode(ap.STDIN_EOF))  # stdinOnce: the shell reads end-of-file (^D) and leaves
        assert a.until_exit() == 0 and watcher.until_exit() == 0
        assert c.exit()["exit_code"] == 0
        log = c.log()
        assert {r.stream for r in log} == {"stdout"}  # a terminal is one stream
        assert any(b"33 111" in r.text for r in log), log  # the pty may put the echo on the same line
        assert not os.path.exists(c.socket)


def test_stdin_pipe_multiple_attachers_and_stdin_once_on_disconnect(tmp_path: Path) -> None:
    script = "while read l; do echo got:$l; echo err:$l >&2; done; echo eof; exit 3"
    with shim(tmp_path, script, stdin=True, stdin_once=True) as c:
        writer = Attacher(c.socket, stdin=True)
        reader = Attacher(c.socket)
        only_out = Attacher(c.socket, stderr=False)
        assert json.loads(writer.first[1])["tty"] is False
        writer.send(ap.encode(ap.STDIN, b"a\n"))
        reader.until(lambda a: b"got:a\n" in a.output() and b"err:a\n" in a.output(ap.STDERR))
        only_out.until_text(b"got:a\n")
        writer.close()  # the session that had stdin ends: the container's stdin is closed
        reader.until_text(b"eof\n")
        assert reader.until_exit() == 3 and only_out.until_exit() == 3
        assert not only_out.output(ap.STDERR)
        late = c.exit()
        assert late["exit_code"] == 3
        records = [(r.stream, r.text) for r in c.log()]
        assert records == [("stdout", b"got:a"), ("stderr", b"err:a"), ("stdout", b"eof")]


def test_stdin_stays_open_across_sessions_without_stdin_once(tmp_path: Path) -> None:
    with shim(tmp_path, "while read l; do echo got:$l; done", stdin=True) as c:
        first = Attacher(c.socket, stdin=True)
        first.send(ap.encode(ap.STDIN, b"one\n"))
        first.send(ap.encode(ap.STDIN_EOF))
        first.until_text(b"got:one")
        first.close()
        second = Attacher(c.socket, stdin=True)
        second.send(ap.encode(ap.STDIN, b"two\n"))
        second.until_text(b"got:two")
        assert b"one" not in second.output()  # no replay: output from the moment of attaching
        assert c.report["pid"] and not (c.dir / "exit.json").exists()


def test_stdin_is_refused_without_stdin_true(tmp_path: Path) -> None:
    with shim(tmp_path, "echo ready; while sleep 0.1; do echo tick; done") as c:
        refused = Attacher(c.socket, stdin=True)
        assert refused.first[0] == ap.REFUSED and b"stdin: true" in refused.first[1]
        with pytest.raises(EOFError):
            refused.next_frame()
        viewer = Attacher(c.socket)
        assert viewer.first[0] == ap.WELCOME
        viewer.until_text(b"tick\n")
        garbage = socket.socket(socket.AF_UNIX)
        with ap.short_unix_path(c.socket) as name:
            garbage.connect(name)
        garbage.sendall(ap.encode(ap.STDIN, b"x"))  # not HELLO first
        assert garbage.recv(100)[:1] == bytes([ap.REFUSED])
        garbage.close()
        viewer.until(lambda a: a.output().count(b"tick\n") >= 3)  # the console carries on


def test_stdin_still_works_after_the_container_closed_its_output(tmp_path: Path) -> None:
    note = tmp_path / "note"  # containers share the host's filesystem
    with shim(tmp_path, f"exec >&- 2>&-; read x; echo $x > {note}; exit 6", stdin=True, stdin_once=True) as c:
        a = Attacher(c.socket, stdin=True)
        a.send(ap.encode(ap.STDIN, b"still here\n"))
        assert a.until_exit() == 6
        assert note.read_text() == "still here\n" and c.log() == []


def test_a_stuck_attacher_is_dropped_and_never_stalls_the_container(tmp_path: Path) -> None:
    size = 12_000_000  # well past the shim's 8 MiB per-attacher buffer and the socket buffers
    with shim(tmp_path, f"read go; head -c {size} /dev/zero | tr '\\0' x; echo; echo done", stdin=True) as c:
        stuck = Attacher(c.socket)  # reads its WELCOME, then nothing ever again
        driver = Attacher(c.socket, stdin=True, stdout=False, stderr=False)
        driver.send(ap.encode(ap.STDIN, b"go\n"))
        assert driver.until_exit() == 0  # the container ran to its end regardless
        assert not driver.output()
        texts = [r.text for r in c.log()]
        assert sum(len(t) for t in texts) == size + len("done") and texts[-1] == b"done"
        with pytest.raises(EOFError):  # dropped: what was sent, then the end, and never EXIT
            stuck.until(lambda a: any(k == ap.EXIT for k, _ in a.seen))
        assert stuck.seen and len(stuck.output()) < size


# --- the kubelet's /attach --------------------------------------------------------------------

class Certs:
    def __init__(self, root: Path) -> None:
        now = issue.now_utc()
        server_ca, client_ca = issue.new_ca("attach-server-ca", now=now), issue.new_ca("attach-client-ca", now=now)
        serving = issue.issue_leaf(server_ca, common_name="node-a", usage="server", ips=["127.0.0.1"], now=now)
        apiserver = issue.issue_leaf(client_ca, common_name="system:kube-apiserver-kubelet-client",
                                     organizations=["system:masters"], usage="client", now=now)
        self.root = root
        for name, data in (("serving.crt", serving.cert_pem), ("serving.key", serving.key_pem),
                           ("client.crt", apiserver.cert_pem), ("client.key", apiserver.key_pem),
                           ("client-ca.crt", client_ca.cert_pem), ("server-ca.crt", server_ca.cert_pem)):
            (root / name).write_bytes(data)

    def client_context(self) -> Any:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(self.root / "server-ca.crt"))
        ctx.load_cert_chain(str(self.root / "client.crt"), str(self.root / "client.key"))
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("attach-certs"))


def target(c: Shim, *, tty: bool, stdin: bool, stdin_once: bool, running: bool = True) -> ContainerAttach:
    return ContainerAttach(pod_uid="uid-1", container="main", container_id="process://x", running=running,
                           socket=c.socket, stdin=stdin, stdin_once=stdin_once, tty=tty)


def run_kubelet(certs: Certs, pods: StaticPods, scenario: Any) -> Any:
    async def main() -> Any:
        server = KubeletServer(KubeletConfig(cert_file=certs.root / "serving.crt", key_file=certs.root / "serving.key",
                                             client_ca_file=certs.root / "client-ca.crt", port=0), pods=pods)
        host, port = await server.start()

        async def connect() -> Any:
            return await kc.open_connection(host, port, ssl_context=certs.client_context())

        try:
            return await asyncio.wait_for(scenario(connect, port), 60)
        finally:
            await server.close()

    return asyncio.run(main())


ATTACH = "/attach/default/web/main"


def q(**flags: int) -> str:
    return "?" + urlencode([(k, str(v)) for k, v in flags.items()])


def test_kubelet_attach_over_websocket_v5_and_v4(certs: Certs, tmp_path: Path) -> None:
    with shim(tmp_path, "exec sh -i", tty=True, stdin=True, stdin_once=True) as tty_c, \
            shim(tmp_path, "while read l; do echo got:$l; echo err:$l >&2; done; exit 5", stdin=True) as pipe_c:
        pods = StaticPods(pid=tty_c.pid, log_dir=tmp_path, attach=target(tty_c, tty=True, stdin=True, stdin_once=True))

        async def scenario(connect: Any, port: int) -> None:
            ws = await kc.ws_connect(await connect(), url=f"wss://127.0.0.1:{port}{ATTACH}{q(stdin=1, stdout=1, tty=1)}",
                                     subprotocols=[ch.V5])
            # v5 half-closes stdin after the input: stdinOnce gives the shell ^D after "exit 3" anyway.
            res = await kc.ws_exec(ws, stdin=b"stty size; exit 3\n", resize=[(111, 33)])
            assert "33 111" in res.stdout.decode(), res.stdout
            assert res.outcome == ch.ExecOutcome(0)  # attach reports success, as upstream; the exit is the pod's
            assert tty_c.exit()["exit_code"] == 3

            pods.attach = target(pipe_c, tty=False, stdin=True, stdin_once=False)
            ws = await kc.ws_connect(await connect(), url=f"wss://127.0.0.1:{port}{ATTACH}{q(stdin=1, stdout=1, stderr=1)}",
                                     subprotocols=[ch.V4])
            assert ws.subprotocol == ch.V4
            got = bytearray()

            async def read_until(text: bytes) -> None:
                while text not in got:
                    msg = await ws.recv()
                    assert msg is not None, got
                    got.extend(msg)

            await ws.send(ch.encode_channel(ch.STDIN, b"hello\n"))
            await read_until(b"err:hello")
            assert bytes([ch.STDOUT]) + b"got:hello\n" in got and bytes([ch.STDERR]) + b"err:hello\n" in got
            await ws.close()  # v4 has no half-close; leaving detaches, the container keeps running
            assert not (pipe_c.dir / "exit.json").exists()

        run_kubelet(certs, pods, scenario)


@pytest.mark.parametrize("protocol", [ch.V4, ch.V5, ch.V2])
def test_kubelet_attach_over_spdy(certs: Certs, tmp_path: Path, protocol: str) -> None:
    with shim(tmp_path, "exec sh -i", tty=True, stdin=True, stdin_once=True) as c:
        pods = StaticPods(pid=c.pid, log_dir=tmp_path, attach=target(c, tty=True, stdin=True, stdin_once=True))

        async def scenario(connect: Any, port: int) -> None:
            resp, conn = await kc.spdy_upgrade(await connect(), target=ATTACH + q(input=1, output=1, tty=1),
                                               host="127.0.0.1", protocols=[protocol])
            assert resp.status == 101
            res = await kc.spdy_exec(conn, protocol=protocol, stdin=b"echo sum=$((20+3)); stty size\n", tty=True,
                                     resize=[(100, 40)] if ch.supports_resize(protocol) else [])
            text = res.stdout.decode()
            assert "sum=23" in text, text
            if ch.supports_resize(protocol):
                assert "40 100" in text, text
            assert res.outcome == ch.ExecOutcome(0)
            assert c.exit()["exit_code"] == 0  # stdin's end reached the shell as ^D (stdinOnce)

        run_kubelet(certs, pods, scenario)


def test_kubelet_attach_output_only_while_another_session_types(certs: Certs, tmp_path: Path) -> None:
    with shim(tmp_path, "read x; echo out:$x; echo err:$x >&2", stdin=True, stdin_once=True) as c:
        pods = StaticPods(pid=c.pid, log_dir=tmp_path, attach=target(c, tty=False, stdin=True, stdin_once=True))

        async def scenario(connect: Any, port: int) -> None:
            resp, conn = await kc.spdy_upgrade(await connect(), target=ATTACH + q(output=1, error=1),
                                               host="127.0.0.1", protocols=[ch.V4])
            watch = asyncio.create_task(kc.spdy_exec(conn, protocol=ch.V4, stdin=None))
            while not _attached(c, 2):
                await asyncio.sleep(0.02)  # the watcher's connection reached the shim before we type
            await asyncio.sleep(0.3)  # ...and its HELLO was handled (attach has no replay); not a timing assertion
            ws = await kc.ws_connect(await connect(), url=f"wss://127.0.0.1:{port}{ATTACH}{q(stdin=1, stdout=1)}",
                                     subprotocols=[ch.V5])
            typed = await kc.ws_exec(ws, stdin=b"hi\n")
            watched = await watch
            assert typed.stdout == b"out:hi\n" and typed.stderr == b""  # it asked for no stderr
            assert (watched.stdout, watched.stderr) == (b"out:hi\n", b"err:hi\n")
            assert watched.outcome == ch.ExecOutcome(0)

        run_kubelet(certs, pods, scenario)


def _attached(c: Shim, n: int) -> bool:
    """At least ``n`` connections to the shim's socket (counted from its /proc fd list)."""
    shim_pid = int(c.report["shim_pid"])
    try:
        links = [os.readlink(f"/proc/{shim_pid}/fd/{fd}") for fd in os.listdir(f"/proc/{shim_pid}/fd")]
    except OSError:
        return False
    return sum(1 for link in links if link.startswith("socket:")) >= n


def test_kubelet_attach_errors_are_status_objects(certs: Certs, tmp_path: Path) -> None:
    with shim(tmp_path, "while sleep 1; do :; done") as c:
        pods = StaticPods(pid=c.pid, log_dir=tmp_path, attach=target(c, tty=False, stdin=False, stdin_once=False))

        async def scenario(connect: Any, port: int) -> None:
            async def attempt(path: str, kind: str = "ws") -> tuple[int, dict[str, Any]]:
                raw = await connect()
                if kind == "ws":
                    resp = await kc.send_upgrade(raw, method="GET", target=path, host="x", headers=[
                        ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Protocol", ch.V5)])
                else:
                    resp, _ = await kc.spdy_upgrade(raw, target=path, host="x", protocols=[ch.V4])
                raw.writer.close()
                return resp.status, json.loads(resp.body or b"{}")

            status, body = await attempt(ATTACH + q(stdin=1, stdout=1))
            assert (status, body["kind"]) == (400, "Status") and "was not created with stdin: true" in body["message"]
            status, body = await attempt(ATTACH + q(stdin=1, stdout=1), "spdy")
            assert status == 400 and "stdin" in body["message"]
            status, body = await attempt("/attach/default/nope/main" + q(stdout=1))
            assert status == 404 and "pod not found" in body["message"]
            status, body = await attempt("/attach/default/web/other" + q(stdout=1))
            assert status == 404 and "'other' not found" in body["message"]
            status, body = await attempt(ATTACH)
            assert status == 400 and "at least one of stdin, stdout, stderr" in body["message"]
            pods.attach = target(c, tty=False, stdin=False, stdin_once=False, running=False)
            status, body = await attempt(ATTACH + q(stdout=1))
            assert status == 400 and "is not running" in body["message"]
            # The console vanished between the lookup and the connect: a failure Status on the error channel.
            pods.attach = ContainerAttach(pod_uid="uid-1", container="main", container_id="process://x", running=True,
                                          socket=str(tmp_path / "gone.sock"), stdin=False, stdin_once=False, tty=False)
            ws = await kc.ws_connect(await connect(), url=f"wss://127.0.0.1:{port}{ATTACH}{q(stdout=1)}",
                                     subprotocols=[ch.V5])
            res = await kc.ws_exec(ws, stdin=None)
            assert res.outcome is not None and res.outcome.exit_code is None
            assert "attach failed" in res.outcome.message and "gone" in res.outcome.message

        run_kubelet(certs, pods, scenario)
