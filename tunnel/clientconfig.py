"""Server URL and credentials for CLI clients, from a kubeconfig or flags.

Reads the current context of a kubeconfig (``clusters[].cluster.server``,
``certificate-authority[-data]``, ``users[].user.client-certificate[-data]``,
``client-key[-data]`` or ``token``). Only what ``edgectl tunnel status``
needs; errors name the file and the missing key.
"""
from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import EdgectlError


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    server: str
    ca_pem: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None
    token: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca_pem) if self.ca_pem else ssl.create_default_context()
        if self.cert_pem and self.key_pem:
            # ssl can only load a key pair from files: write them to a private temp dir.
            with tempfile.TemporaryDirectory(prefix="edgectl-cred-") as tmp:
                cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
                fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(self.key_pem)
                cert.write_text(self.cert_pem)
                ctx.load_cert_chain(str(cert), str(key))
        return ctx


MAX_FILE_BYTES = 4 * 1024 * 1024


def read_text_file(path: Path, *, what: str) -> str:
    """A small UTF-8 file (kubeconfig, PEM), or one clear EdgectlError; OSError passes."""
    with path.open("rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise EdgectlError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB; not a {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EdgectlError(f"{path}: not a {what} (not UTF-8 text)") from None


def _named(items: Any, name: str, kind: str, source: str) -> dict[str, Any]:
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("name") == name:
            found = item.get(kind) or {}
            if not isinstance(found, dict):
                raise EdgectlError(f"{source}: {kind} {name!r} must be a mapping")
            return found
    raise EdgectlError(f"{source}: no {kind} named {name!r}")


def _pem(entry: dict[str, Any], key: str, base: Path, source: str) -> str | None:
    if entry.get(f"{key}-data"):
        try:
            return base64.b64decode(entry[f"{key}-data"]).decode()
        except (ValueError, UnicodeDecodeError):
            raise EdgectlError(f"{source}: {key}-data is not base64 PEM") from None
    if entry.get(key):
        path = Path(entry[key])
        path = path if path.is_absolute() else base / path
        try:
            return read_text_file(path, what="PEM file")
        except OSError as exc:
            raise EdgectlError(f"{source}: {key} {path}: {exc.strerror}") from None
    return None


def from_kubeconfig(path: Path) -> Credentials:
    source = str(path)
    try:
        doc = yaml.safe_load(read_text_file(path, what="kubeconfig"))
    except FileNotFoundError:
        raise EdgectlError(f"{source}: no such kubeconfig (use --kubeconfig or --server/--token)") from None
    except OSError as exc:
        raise EdgectlError(f"{source}: cannot read kubeconfig: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EdgectlError(f"{source}: not a kubeconfig: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise EdgectlError(f"{source}: not a kubeconfig: YAML nested too deeply") from None
    if not isinstance(doc, dict):
        raise EdgectlError(f"{source}: not a kubeconfig")
    ctx_name = doc.get("current-context")
    if not ctx_name:
        raise EdgectlError(f"{source}: no current-context")
    ctx = _named(doc.get("contexts"), ctx_name, "context", source)
    cluster = _named(doc.get("clusters"), ctx.get("cluster", ""), "cluster", source)
    user = _named(doc.get("users"), ctx.get("user", ""), "user", source) if ctx.get("user") else {}
    if not isinstance(cluster.get("server"), str) or not cluster["server"]:
        raise EdgectlError(f"{source}: cluster has no server URL")
    base = path.parent
    return Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_pem=_pem(cluster, "certificate-authority", base, source),
        cert_pem=_pem(user, "client-certificate", base, source),
        key_pem=_pem(user, "client-key", base, source),
        token=user.get("token"),
    )
