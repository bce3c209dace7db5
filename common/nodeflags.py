"""The node flags ``edgectl server`` accepts for its embedded agent.

They live here, not in ``edgectl.agent``, so the server's command can declare
them without importing agent code (``--disable-agent`` must never load it).
The values are validated by ``edgectl.agent.embed`` when an agent does start.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def node_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --node-name, --node-ip, --node-external-ip, --node-label and --node-taint."""
    options = [
        click.option("--node-name", default=None, help="Node name of the embedded agent (default: host name)."),
        click.option("--node-ip", multiple=True, help="InternalIP of this node (default: the address of the default route)."),
        click.option("--node-external-ip", multiple=True, help="ExternalIP of this node. Repeatable."),
        click.option("--node-label", multiple=True, help="key=value label for this node. Repeatable."),
        click.option("--node-taint", multiple=True, help="key[=value]:Effect taint for this node. Repeatable."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
