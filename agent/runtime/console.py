"""The container's console inside the shim: output to the CRI log and to
attachers, stdin and window size from them (stdlib only, like the shim).

One ``select`` loop, from the container's start until it exited and its
output is drained. It never waits for an attacher: each one has an output
buffer, and one that falls more than ``MAX_CLIENT_BUFFER`` behind is dropped,
so a stuck client can never stall the container or its log. Stdin is the
other way round: while more than ``MAX_STDIN_BUFFER`` bytes wait for the
container to read them, attachers are not read, so TCP pushes back on the
client. The protocol is in ``attachproto``.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import struct
import termios
import time

try:  # imported as part of the package (tests) or run next to the shim script
    from . import attachproto as ap
    from .crilog import LineSplitter
except ImportError:
    import attachproto as ap  # type: ignore[no-redef]
    from crilog import LineSplitter  # type: ignore[no-redef]

MAX_CLIENT_BUFFER = 8 << 20
MAX_STDIN_BUFFER = 1 << 20
DRAIN_AFTER_EXIT = 5.0  # output still open this long after the exit: stop waiting for it
GOODBYE_TIMEOUT = 2.0  # how long EXIT frames may take to reach attachers
EOF_CHAR = b"\x04"  # a terminal has no half-close: ^D is end-of-file for the reader


def listen(path: str) -> socket.socket:
    """The attach socket, mode 0600 from the start (umask around bind)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        with ap.short_unix_path(path) as name:
            sock.bind(name)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    sock.setblocking(False)
    return sock


def _wait(rlist: list[int], wlist: list[int], timeout: float | None) -> tuple[list[int], list[int]]:
    """poll(2), not select(2): any number of attachers, any descriptor number.
    A hang-up or error counts as both readable and writable, so the handler
    that reads or writes meets the EOF or error and cleans up."""
    events: dict[int, int] = {}
    for fd in rlist:
        events[fd] = events.get(fd, 0) | select.POLLIN
    for fd in wlist:
        events[fd] = events.get(fd, 0) | select.POLLOUT
    poller = select.poll()
    for fd, mask in events.items():
        poller.register(fd, mask)
    ready = poller.poll(None if timeout is None else int(timeout * 1000) + 1)
    trouble = select.POLLHUP | select.POLLERR | select.POLLNVAL
    readable = [fd for fd, ev in ready if ev & (select.POLLIN | trouble) and events[fd] & select.POLLIN]
    writable = [fd for fd, ev in ready if ev & (select.POLLOUT | trouble) and events[fd] & select.POLLOUT]
    return readable, writable


def set_window_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = ap.FrameDecoder()
        self.out = bytearray()
        self.hello = False
        self.streams = {"stdin": False, "stdout": False, "stderr": False}
        self.stdin_done = False
        self.closing = False  # REFUSED sent: close once flushed


class Console:
    """``outputs``: fd -> "stdout"/"stderr" (the pty master counts as stdout);
    ``stdin_fd``: the pipe's write end or the pty master, None without stdin;
    ``pty``: the master when the container has a tty."""

    def __init__(self, *, log, pid: int, outputs: dict[int, str], stdin_fd: int | None, pty: int | None,  # noqa: ANN001
                 stdin_once: bool, socket_path: str | None) -> None:
        self.log, self.pid = log, pid
        self.tty = pty is not None
        self.outputs = dict(outputs)
        self.splitters = {stream: LineSplitter(stream) for stream in ("stdout", "stderr")}
        self.stdin_fd, self.pty, self.stdin_once = stdin_fd, pty, stdin_once
        self.has_stdin = stdin_fd is not None
        self.stdin_buf = bytearray()
        self.stdin_closed = stdin_fd is None
        self.close_stdin_when_flushed = False
        self.socket_path = socket_path
        # Listening before the agent hears "started": once Running, attach works.
        self.listener = listen(socket_path) if socket_path else None
        self.clients: dict[int, _Client] = {}
        for fd in [*self.outputs, *([stdin_fd] if stdin_fd is not None else [])]:
            os.set_blocking(fd, False)

    # -- the loop ------------------------------------------------------------

    def run(self) -> int:
        """Serve until the container exited and its output is drained; return
        the wait status. The caller records the exit, then calls :meth:`finish`."""
        pidfd = os.pidfd_open(self.pid)
        status: int | None = None
        drain_until = 0.0
        try:
            while status is None or (self.outputs and time.monotonic() < drain_until):
                rlist = list(self.outputs)
                if status is None:
                    rlist.append(pidfd)
                if self.listener is not None:
                    rlist.append(self.listener.fileno())
                if len(self.stdin_buf) < MAX_STDIN_BUFFER:
                    rlist += [fd for fd, c in self.clients.items() if not c.closing]
                wlist = [fd for fd, c in self.clients.items() if c.out]
                if self.stdin_buf and self.stdin_fd is not None:
                    wlist.append(self.stdin_fd)
                timeout = None if status is None else max(0.0, drain_until - time.monotonic())
                readable, writable = _wait(rlist, wlist, timeout)
                for fd in readable:
                    if fd == pidfd:
                        _, status = os.waitpid(self.pid, 0)
                        drain_until = time.monotonic() + DRAIN_AFTER_EXIT
                        self._close_stdin_now()
                    elif self.listener is not None and fd == self.listener.fileno():
                        self._accept()
                    elif fd in self.outputs:
                        self._read_output(fd)
                    elif fd in self.clients:
                        self._read_client(self.clients[fd])
                for fd in writable:
                    if fd in self.clients:
                        self._flush_client(self.clients[fd])
                    elif fd == self.stdin_fd:
                        self._write_stdin()
        finally:
            os.close(pidfd)
        for fd in list(self.outputs):  # past the drain deadline: what is left stays unread
            self._close_output(fd)
        for splitter in self.splitters.values():
            if records := splitter.close():
                self.log.write(records)
        return status

    def finish(self, exit_code: int) -> None:
        """Tell attachers how the container ended, give them a moment to read
        it, then close everything and remove the socket."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
        frame = ap.encode_json(ap.EXIT, {"exit_code": exit_code})
        for client in self.clients.values():
            if client.hello and not client.closing:
                client.out += frame
        deadline = time.monotonic() + GOODBYE_TIMEOUT
        while (pending := [fd for fd, c in self.clients.items() if c.out]) and time.monotonic() < deadline:
            _, writable = _wait([], pending, max(0.0, deadline - time.monotonic()))
            for fd in writable:
                if fd in self.clients:
                    self._flush_client(self.clients[fd])
        for fd in list(self.clients):
            self._drop(self.clients[fd], ended=False)

    # -- output --------------------------------------------------------------

    def _read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: every slave side of the pty is closed
                raise
            data = b""
        if not data:
            self._close_output(fd)
            return
        stream = self.outputs[fd]
        if records := self.splitters[stream].feed(data):
            self.log.write(records)
        frame = ap.encode(ap.STDOUT if stream == "stdout" else ap.STDERR, data)
        for client in list(self.clients.values()):
            if client.hello and client.streams[stream] and not client.closing:
                client.out += frame
                if len(client.out) > MAX_CLIENT_BUFFER:
                    self._drop(client)  # too slow: never let one attacher hold the container back
                else:
                    self._flush_client(client)

    def _close_output(self, fd: int) -> None:
        self.outputs.pop(fd, None)
        if fd == self.pty:
            self._close_stdin_now()  # the terminal is gone; nothing reads input any more
            self.pty = None
        os.close(fd)

    # -- clients -------------------------------------------------------------

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        sock.setblocking(False)
        self.clients[sock.fileno()] = _Client(sock)

    def _read_client(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        try:
            for kind, payload in client.decoder.feed(data):
                self._frame(client, kind, payload)
                if client.closing or client.sock.fileno() < 0:
                    return
        except ap.AttachProtocolError as exc:
            self._refuse(client, f"protocol error: {exc}")

    def _frame(self, client: _Client, kind: int, payload: bytes) -> None:
        if not client.hello:
            if kind != ap.HELLO:
                self._refuse(client, "the first frame must be HELLO")
                return
            client.streams = ap.stream_payload(payload)
            if client.streams["stdin"] and not self.has_stdin:
                self._refuse(client, "the container was not created with stdin: true; attach without stdin")
                return
            client.hello = True
            client.out += ap.encode_json(ap.WELCOME, {"tty": self.tty,
                                                      "stdin": client.streams["stdin"],
                                                      "stdin_closed": self.stdin_closed})
            self._flush_client(client)
            return
        if kind == ap.STDIN:
            if client.streams["stdin"] and not client.stdin_done and not self.stdin_closed:
                self.stdin_buf += payload
                self._write_stdin()
        elif kind == ap.STDIN_EOF:
            self._stdin_ended(client)
        elif kind == ap.RESIZE:
            width, height = ap.decode_resize(payload)
            if self.pty is not None:
                try:
                    set_window_size(self.pty, width, height)
                except OSError:
                    pass
        else:
            raise ap.AttachProtocolError(f"unexpected {ap.NAMES.get(kind, kind)} frame from an attacher")

    def _refuse(self, client: _Client, reason: str) -> None:
        client.out += ap.encode(ap.REFUSED, reason.encode())
        client.closing = True
        self._flush_client(client)

    def _flush_client(self, client: _Client) -> None:
        while client.out:
            try:
                sent = client.sock.send(client.out)
            except BlockingIOError:
                return
            except OSError:
                self._drop(client)
                return
            del client.out[:sent]
        if client.closing:
            self._drop(client, ended=False)

    def _drop(self, client: _Client, *, ended: bool = True) -> None:
        fd = client.sock.fileno()
        if self.clients.pop(fd, None) is None:
            return
        if ended and client.streams["stdin"]:
            self._stdin_ended(client)
        client.sock.close()

    # -- stdin ---------------------------------------------------------------

    def _stdin_ended(self, client: _Client) -> None:
        if client.stdin_done or not client.streams["stdin"]:
            return
        client.stdin_done = True
        if self.stdin_once and not self.stdin_closed:
            # Upstream stdinOnce: the first attach session with stdin ends the container's stdin.
            self.stdin_closed = True
            if self.pty is not None:
                self.stdin_buf += EOF_CHAR
            self.close_stdin_when_flushed = True
            self._write_stdin()

    def _write_stdin(self) -> None:
        fd = self.stdin_fd
        while fd is not None and self.stdin_buf:
            try:
                n = os.write(fd, self.stdin_buf[:65536])
            except BlockingIOError:
                return
            except OSError:  # EPIPE/EIO: the container stopped reading for good
                self.stdin_buf.clear()
                self._close_stdin_now()
                return
            del self.stdin_buf[:n]
        if self.close_stdin_when_flushed and not self.stdin_buf:
            self._close_stdin_now()

    def _close_stdin_now(self) -> None:
        self.stdin_closed = True
        self.stdin_buf.clear()
        fd, self.stdin_fd = self.stdin_fd, None
        if fd is not None and fd != self.pty and fd not in self.outputs:
            os.close(fd)  # the pipe: the container reads EOF


def wait_status_to_exit(status: int) -> dict:
    """exit.json fields from a wait status (128+N for death by signal N)."""
    code = os.waitstatus_to_exitcode(status)
    sig = -code if code < 0 else None
    exit_code = 128 + sig if sig else code
    return {"exit_code": exit_code, "signal": sig, "reason": "Completed" if exit_code == 0 else "Error",
            "message": ""}
