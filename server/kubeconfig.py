"""Kubeconfig files with embedded credentials (cluster/user/context "default", as k3s)."""
from __future__ import annotations

import base64
from pathlib import Path

import yaml

from edgectl.server.pki.files import write_atomic


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def render_kubeconfig(*, server_url: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, name: str = "default") -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server_url, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": name, "user": {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_kubeconfig(path: Path, text: str) -> None:
    """Mode 0600: the file holds an admin private key."""
    write_atomic(path, text.encode(), mode=0o600)
