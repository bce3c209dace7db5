"""Container probes without I/O: the spec, kubelet's result rules, readiness.

kubelet's prober restated for our records:

* defaults as upstream: ``initialDelaySeconds`` 0, ``periodSeconds`` 10,
  ``timeoutSeconds`` 1, ``successThreshold`` 1, ``failureThreshold`` 3;
  liveness and startup probes must use ``successThreshold`` 1;
* a probe's result only flips after ``successThreshold`` consecutive successes
  or ``failureThreshold`` consecutive failures;
* before its first flip a readiness probe counts as failed (not ready), a
  liveness probe as succeeded, a startup probe as unknown (not started);
* nothing is probed during ``initialDelaySeconds`` after the container started;
* while a startup probe has not succeeded, liveness and readiness wait; once it
  has, it is not run again for that container instance;
* a failed liveness or startup probe means the container is killed and the
  restart policy applies.

The I/O side (:mod:`.prober`) runs the handlers and feeds results into
:class:`ProbeState`; :func:`container_readiness` gives ``started``/``ready``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
KINDS = (STARTUP, LIVENESS, READINESS)
HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


class ProbeSpecError(ValueError):
    """A probe the pod spec cannot mean (becomes a container refusal reason)."""


@dataclass(frozen=True, kw_only=True)
class ProbeSpec:
    handler: str  # exec | httpGet | tcpSocket
    command: tuple[str, ...] = ()  # exec
    port: int | str = 0  # httpGet / tcpSocket: number or a named container port
    host: str = ""  # "" means the pod IP
    path: str = "/"  # httpGet
    scheme: str = "HTTP"  # httpGet
    headers: tuple[tuple[str, str], ...] = ()  # httpGet httpHeaders, in order
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    grace_seconds: int | None = None  # probe-level terminationGracePeriodSeconds


def _int(doc: Mapping[str, Any], key: str, default: int, *, minimum: int, what: str) -> int:
    value = doc.get(key)
    if value is None or value == 0 and minimum > 0:  # the API defaults 0 to the default
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProbeSpecError(f"{what}.{key} must be an integer >= {minimum}")
    return value


def _port(value: Any, what: str) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 < value < 65536:
            raise ProbeSpecError(f"{what}.port must be 1-65535")
        return value
    if isinstance(value, str) and value:
        return int(value) if value.isdigit() else value
    raise ProbeSpecError(f"{what}.port is required (a number or a container port name)")


def parse_probe(doc: Any, *, kind: str) -> ProbeSpec | None:
    """``livenessProbe``/``readinessProbe``/``startupProbe`` as a ProbeSpec."""
    if doc is None:
        return None
    what = f"{kind}Probe"
    if not isinstance(doc, Mapping):
        raise ProbeSpecError(f"{what} must be a mapping")
    handlers = [h for h in HANDLERS if doc.get(h) is not None]
    if len(handlers) != 1:
        raise ProbeSpecError(f"{what} must set exactly one of exec, httpGet, tcpSocket")
    handler = handlers[0]
    if handler == "grpc":
        raise ProbeSpecError(f"{what}: grpc probes are not supported by the process runtime")
    body = doc[handler]
    if not isinstance(body, Mapping):
        raise ProbeSpecError(f"{what}.{handler} must be a mapping")
    timing = dict(
        initial_delay=float(_int(doc, "initialDelaySeconds", 0, minimum=0, what=what)),
        period=float(_int(doc, "periodSeconds", 10, minimum=1, what=what)),
        timeout=float(_int(doc, "timeoutSeconds", 1, minimum=1, what=what)),
        success_threshold=_int(doc, "successThreshold", 1, minimum=1, what=what),
        failure_threshold=_int(doc, "failureThreshold", 3, minimum=1, what=what),
    )
    if kind != READINESS and timing["success_threshold"] != 1:
        raise ProbeSpecError(f"{what}.successThreshold must be 1")
    grace = doc.get("terminationGracePeriodSeconds")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int) or grace < 1):
        raise ProbeSpecError(f"{what}.terminationGracePeriodSeconds must be an integer >= 1")
    if handler == "exec":
        command = body.get("command")
        if not isinstance(command, list) or not command:
            raise ProbeSpecError(f"{what}.exec.command must be a non-empty list")
        return ProbeSpec(handler=handler, command=tuple(str(c) for c in command), grace_seconds=grace, **timing)
    port = _port(body.get("port"), f"{what}.{handler}")
    host = str(body.get("host") or "")
    if handler == "tcpSocket":
        return ProbeSpec(handler=handler, port=port, host=host, grace_seconds=grace, **timing)
    scheme = str(body.get("scheme") or "HTTP").upper()
    if scheme not in ("HTTP", "HTTPS"):
        raise ProbeSpecError(f"{what}.httpGet.scheme must be HTTP or HTTPS")
    headers = []
    for h in body.get("httpHeaders") or []:
        if not isinstance(h, Mapping) or not h.get("name"):
            raise ProbeSpecError(f"{what}.httpGet.httpHeaders entries need a name")
        headers.append((str(h["name"]), str(h.get("value", ""))))
    path = str(body.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    return ProbeSpec(handler=handler, port=port, host=host, path=path, scheme=scheme, headers=tuple(headers),
                     grace_seconds=grace, **timing)


def http_success(status: int) -> bool:
    """kubelet: 200-399 is success (redirects are not followed off-host)."""
    return 200 <= status < 400


@dataclass(kw_only=True)
class ProbeState:
    """One probe of one container instance (kubelet's worker, minus the timer)."""

    kind: str
    spec: ProbeSpec
    result: bool | None = None  # the published result; None = unknown
    last: bool | None = None  # the last raw outcome
    streak: int = 0  # how many times in a row ``last`` happened
    done: bool = False  # startup succeeded: this probe never runs again

    def __post_init__(self) -> None:
        self.result = {READINESS: False, LIVENESS: True, STARTUP: None}[self.kind]

    def observe(self, ok: bool) -> bool:
        """Feed one raw outcome; return whether the published result changed."""
        if ok == self.last:
            self.streak += 1
        else:
            self.last, self.streak = ok, 1
        need = self.spec.success_threshold if ok else self.spec.failure_threshold
        if self.streak < need or self.result == ok:
            return False
        self.result = ok
        if self.kind == STARTUP and ok:
            self.done = True
        return True

    @property
    def kill(self) -> bool:
        """The container must be killed (liveness or startup failed for good)."""
        return self.kind in (LIVENESS, STARTUP) and self.result is False


def should_probe(state: ProbeState, *, started: bool, running_for: float) -> bool:
    """Whether this probe runs on this tick (the timer fires every period)."""
    if state.done or state.kill:
        return False
    if state.kind != STARTUP and not started:
        return False  # startup gates liveness and readiness
    return running_for >= state.spec.initial_delay


@dataclass(frozen=True, kw_only=True)
class Readiness:
    started: bool
    ready: bool


def container_readiness(states: Mapping[str, ProbeState], *, running: bool) -> Readiness:
    """``started`` and ``ready`` of a container from its probes' results."""
    if not running:
        return Readiness(started=False, ready=False)
    startup = states.get(STARTUP)
    started = startup is None or startup.result is True
    readiness = states.get(READINESS)
    ready = started and (readiness is None or readiness.result is True)
    return Readiness(started=started, ready=ready)
