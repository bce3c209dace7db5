"""Per-container supervisor of the process runtime (conmon's job, in Python).

Run as ``python -E -S shim.py SPEC.json`` (a standalone script, stdlib only,
without site-packages, so each container costs one small interpreter, about
10 MB RSS, not the agent's imports).

It detaches from the agent (double fork), so containers, their logs and
their exit codes survive an agent restart. Then it:

1. unshares a PID namespace for its children and forks the container's PID 1,
   which joins the pod's netns (``setns``; not for hostNetwork pods), unshares mount and UTS namespaces,
   sets the hostname, bind-mounts the pod's files and volumes, mounts a fresh
   /proc, changes directory and execs the command;
2. prints one JSON line on stdout for the agent (the container's host PID and
   start time, or a start error) and closes stdout;
3. copies the container's stdout/stderr into the CRI log file and serves its
   console to attachers on ``attach.sock`` (``console.py``, protocol in
   ``attachproto.py``): with ``tty`` the container's stdio is a pty slave (its
   controlling terminal, in a new session), with ``stdin`` alone a pipe;
4. writes ``exit.json`` (exit code, signal, time) when the container ends.

The shim stays in the node's namespaces as the container's parent, so it is
the one process that can ``waitpid`` it and learn the exit code. The
container has ``PR_SET_PDEATHSIG=SIGKILL``: if the shim is killed, its
container (the whole PID namespace) goes with it, and nothing runs untracked.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import sys
import termios
import time

try:  # imported as part of the package (tests) or run as a script (runtime)
    from .console import Console, wait_status_to_exit
except ImportError:
    from console import Console, wait_status_to_exit  # type: ignore[no-redef]

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
EXIT_START_FAILED = 128  # what kubelet reports for a container that never ran

_libc = ctypes.CDLL(None, use_errno=True)


def _ok(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _ok(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                    ctypes.c_ulong(flags), None), f"mount {target}")


def proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot; tells a reused PID apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[19])


def _write_json(path: str, doc: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def _exec_container(spec: dict, stdio: tuple[int, int, int], report_w: int) -> None:
    """Runs in the forked child, PID 1 of the new PID namespace, until exec."""
    # If the shim dies, nothing could report this container any more: die too.
    # (No getppid() re-check for a shim that died before this line: in a new
    # PID namespace getppid() is always 0. The window is a few microseconds.)
    _ok(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl pdeathsig")
    if spec["netns"]:  # empty for hostNetwork pods: keep the node's network namespace
        fd = os.open(spec["netns"], os.O_RDONLY)
        _ok(_libc.setns(fd, CLONE_NEWNET), "setns net")
        os.close(fd)
    _ok(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare mount+uts")
    # Our bind mounts must not propagate back to the host.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    name = spec["hostname"].encode()
    _ok(_libc.sethostname(name, len(name)), "sethostname")
    for m in spec.get("mounts", []):
        _mount(m["source"], m["target"], None, MS_BIND | MS_REC)
        if m.get("readOnly"):
            _mount(None, m["target"], None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # this PID namespace's view
    stdin_r, out_w, err_w = stdio
    if spec.get("tty"):
        # Our own session, with the pty slave as its controlling terminal (as runc's console).
        os.setsid()
        fcntl.ioctl(out_w, termios.TIOCSCTTY, 0)
    os.dup2(stdin_r if stdin_r >= 0 else os.open("/dev/null", os.O_RDONLY), 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.closerange(3, report_w)
    os.closerange(report_w + 1, 1 << 16)
    for sig in (signal.SIGPIPE, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    os.chdir(spec.get("workingDir") or "/")
    os.execvpe(spec["argv"][0], spec["argv"], spec["env"])


def _start(spec: dict) -> tuple[int, str]:
    """Start the container; return (host PID, start error message or '')."""
    stdin_r = stdin_w = -1
    if spec.get("tty"):
        out_r, out_w = os.openpty()  # stdin, stdout and stderr are all the slave
        err_r, err_w = -1, out_w
        stdin_w = out_r if spec.get("stdin") else -1
        stdin_r = out_w
    else:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        if spec.get("stdin"):
            stdin_r, stdin_w = os.pipe()
    report_r, report_w = os.pipe2(os.O_CLOEXEC)  # closed by a successful exec
    # Only the shim's children land in the new PID namespace; the shim stays
    # outside, as the parent that can waitpid() the container's PID 1.
    _ok(_libc.unshare(CLONE_NEWPID), "unshare pid")
    pid = os.fork()
    if pid == 0:
        try:
            for fd in {out_r, err_r, stdin_w, report_r} - {-1}:
                os.close(fd)
            _exec_container(spec, (stdin_r, out_w, err_w), report_w)
        except BaseException as exc:  # noqa: BLE001 - reported, then exit
            os.write(report_w, _describe(exc, spec).encode())
        os._exit(EXIT_START_FAILED)
    for fd in {out_w, err_w, stdin_r, report_w} - {-1, stdin_w}:
        os.close(fd)
    error = b""
    while chunk := os.read(report_r, 4096):
        error += chunk
    os.close(report_r)
    spec["_pipes"] = (out_r, err_r)
    spec["_stdin"] = stdin_w
    return pid, error.decode(errors="replace")


def _describe(exc: BaseException, spec: dict) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename is None:
        return f'exec: "{spec["argv"][0]}": executable file not found in $PATH'
    if isinstance(exc, OSError):
        target = exc.filename or spec["argv"][0]
        return f"{target}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


class _LogFile:
    """The CRI log with kubelet-style rotation: past ``max_bytes`` the file is
    renamed to ``<n>.log.<YYYYmmdd-HHMMSS>`` and a new one started; only the
    newest ``max_files - 1`` rotated files are kept. ``max_bytes=0``: never rotate."""

    def __init__(self, path: str, *, max_bytes: int, max_files: int) -> None:
        self.path, self.max_bytes, self.max_files = path, max_bytes, max(2, max_files)
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    def write(self, data: bytes) -> None:
        _write_all(self.fd, data)
        self.size += len(data)
        if self.max_bytes and self.size >= self.max_bytes:
            self.rotate()

    def rotate(self) -> None:
        os.close(self.fd)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target, n = f"{self.path}.{stamp}", 0
        while os.path.exists(target):  # several rotations within one second
            n += 1
            target = f"{self.path}.{stamp}.{n}"
        os.rename(self.path, target)
        self.fd, self.size = self._open(), 0
        prefix = os.path.basename(self.path) + "."
        folder = os.path.dirname(self.path)
        rotated = sorted((os.stat(os.path.join(folder, f)).st_mtime_ns, f)
                         for f in os.listdir(folder) if f.startswith(prefix))
        for _, old in rotated[: max(0, len(rotated) - (self.max_files - 1))]:
            os.unlink(os.path.join(folder, old))


def _console(spec: dict, log: _LogFile, pid: int) -> Console:
    out_r, err_r = spec["_pipes"]
    stdin_w = spec["_stdin"]
    if spec.get("tty"):  # one terminal: everything it shows is stdout, as upstream logs it
        return Console(log=log, pid=pid, outputs={out_r: "stdout"}, stdin_fd=stdin_w if stdin_w >= 0 else None,
                       pty=out_r, stdin_once=bool(spec.get("stdinOnce")), socket_path=spec.get("attach"))
    return Console(log=log, pid=pid, outputs={out_r: "stdout", err_r: "stderr"},
                   stdin_fd=stdin_w if stdin_w >= 0 else None, pty=None,
                   stdin_once=bool(spec.get("stdinOnce")), socket_path=spec.get("attach"))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def supervise(spec: dict, report) -> int:  # noqa: ANN001 - report: Callable[[dict], None]
    """Everything after detaching; returns the shim's own exit code."""
    for sig in (signal.SIGHUP, signal.SIGPIPE, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    os.makedirs(os.path.dirname(spec["log"]), exist_ok=True)
    log = _LogFile(spec["log"], max_bytes=int(spec.get("log_max_bytes", 0)),
                   max_files=int(spec.get("log_max_files", 5)))
    started = time.time()
    pid, error = _start(spec)
    if error:
        for fd in {*spec["_pipes"], spec["_stdin"]} - {-1}:
            os.close(fd)
        if pid:
            os.waitpid(pid, 0)
        _write_json(spec["exit"], {"exit_code": EXIT_START_FAILED, "signal": None, "finished_at": time.time(),
                                   "reason": "StartError", "message": error})
        report({"error": error})
        return 0
    console = _console(spec, log, pid)
    report({"pid": pid, "pid_start": proc_start_ticks(pid), "shim_pid": os.getpid(),
            "shim_start": proc_start_ticks(os.getpid()), "started_at": started})
    ended = wait_status_to_exit(console.run())
    _write_json(spec["exit"], {**ended, "finished_at": time.time()})
    console.finish(ended["exit_code"])  # attachers hear of the exit after it is recorded
    return 0


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        spec = json.load(f)
    if os.fork() != 0:
        return 0  # the launcher: the agent only waits for this one
    os.setsid()

    def report(doc: dict) -> None:
        # One line for the agent, then stdout goes away so the agent's pipe closes.
        os.write(1, (json.dumps(doc) + "\n").encode())
        null = os.open("/dev/null", os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)

    try:
        return supervise(spec, report)
    except Exception as exc:  # noqa: BLE001 - the agent must hear about it
        try:
            report({"error": f"shim: {exc}"})
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
