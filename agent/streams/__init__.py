"""Sans-I/O protocol cores for the kubelet's streaming endpoints.

- :mod:`.spdy_frames`: SPDY/3.1 frame codec and header-block compression.
- :mod:`.spdy_session`: SPDY/3.1 session state machine (streams, flow control).
- :mod:`.channels`: Kubernetes stream protocols on top (remotecommand and
  port-forward names, websocket channel framing, exit Status objects).

None of these modules touches a socket, a task or a clock.
"""
