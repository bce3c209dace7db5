"""The server's join token: made once, kept in ``<data-dir>/token`` (mode 0600).

The format and parsing live in :mod:`edgectl.joinproto` (the agent needs them
too); this module owns the file and checks secrets that callers present.
"""
from __future__ import annotations

import logging
import secrets
from pathlib import Path

from edgectl.joinproto import TOKEN_PREFIX, JoinToken, TokenError, ca_hash, check_secret, parse_token, secret_matches
from edgectl.log import fields
from edgectl.server.pki.files import write_atomic

log = logging.getLogger(__name__)

TOKEN_FILE = "token"

__all__ = ["JoinToken", "TokenError", "check_token_flag", "generate_secret", "load_or_create_token", "make_token", "parse_token", "presented_secret_ok"]


def generate_secret() -> str:
    """128 random bits, hex: fits basic auth and files without escaping."""
    return secrets.token_hex(16)


def make_token(ca_pem: bytes, secret: str) -> JoinToken:
    return JoinToken(ca_hash=ca_hash(ca_pem), secret=check_secret(secret))


def check_token_flag(value: str) -> str:
    """Validate ``--token`` before anything is created: a secret, or a whole
    ``K10...`` token copied from ``<data-dir>/token`` (as k3s accepts)."""
    if value.startswith(TOKEN_PREFIX):
        return parse_token(value).secret
    return check_secret(value)


def load_or_create_token(data_dir: Path, ca_pem: bytes, *, secret: str | None = None) -> JoinToken:
    """The cluster token, written to ``<data-dir>/token``.

    An explicit ``secret`` (the ``--token`` flag) wins. Otherwise the secret in
    the file is kept; its CA hash is refreshed if the CA changed, so the file
    always shows a token that works.
    """
    path = data_dir / TOKEN_FILE
    existing: JoinToken | None = None
    if secret is not None and secret.startswith(TOKEN_PREFIX):
        full = parse_token(secret)
        if not full.matches_ca(ca_pem):
            raise TokenError(f"--token is a full token for another cluster's CA (hash {full.ca_hash[:16]}..., "
                             f"this server's CA hashes to {ca_hash(ca_pem)[:16]}...); give only the secret, "
                             "or the token from this server's <data-dir>/token")
        secret = full.secret
    try:
        if path.exists():
            try:
                existing = parse_token(path.read_text())
            except TokenError as exc:
                raise TokenError(f"{path}: {exc} (fix or delete the file to generate a new token)") from None
        if secret is None:
            secret = existing.secret if existing else generate_secret()
        token = make_token(ca_pem, secret)
        if existing != token:
            write_atomic(path, f"{token}\n".encode(), mode=0o600)
            log.info("wrote join token", extra=fields(path=str(path), new_secret=existing is None or existing.secret != secret))
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot use {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return token


def presented_secret_ok(presented: str, token: JoinToken) -> bool:
    """True if a caller's credential is the token's secret (or the whole token).

    Accepting the full token lets an agent send what the user gave it; its CA
    hash must then also match, so a token for another cluster is refused.
    """
    if presented.startswith("K10"):
        try:
            other = parse_token(presented)
        except TokenError:
            return False
        return secret_matches(other.ca_hash, token.ca_hash) and secret_matches(other.secret, token.secret)
    return secret_matches(presented, token.secret)
