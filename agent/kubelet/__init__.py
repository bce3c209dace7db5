"""The kubelet API (``127.0.0.1:10250``): logs, exec, port-forward, /pods.

Modules: :mod:`.server` (TLS, auth and routing), :mod:`.auth` (who may call),
:mod:`.logs` (``/containerLogs``), :mod:`.execproc` (the exec'd process, pty),
:mod:`.exec` (exec over websocket channels and SPDY), :mod:`.portforward`
(SPDY and websocket-wrapped SPDY, sockets opened inside the pod netns),
:mod:`.spdy_conn` and :mod:`.wsconn` (asyncio layers over the sans-I/O cores
in :mod:`edgectl.agent.streams` and websockets).

What the runtime must provide is :class:`edgectl.agent.runtime.interface.PodView`.
"""
