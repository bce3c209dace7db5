"""QA: `edgectl agent --server` values a clumsy user types (checked before anything runs)."""
from __future__ import annotations

import pytest

from edgectl.agent.config import check_server_url
from edgectl.errors import EdgectlError


@pytest.mark.parametrize("url, fragment", [
    ("https://[zz]:6443", "invalid host or port"),  # urlsplit's ValueError was a traceback
    ("https://h:99999", "invalid host or port"),
    ("https://h:0", "expected just https://HOST:PORT"),
    ("https://h:6443/some/path", "no user, path or query"),  # was used as a base for /cacerts
    ("https://user:pw@h:6443", "no user, path or query"),
    ("https://h:6443?x=1", "no user, path or query"),
    ("http://h:6443", "expected https://HOST:PORT"),
    ("h:6443", "expected https://HOST:PORT"),
])
def test_bad_server_urls(url: str, fragment: str) -> None:
    with pytest.raises(EdgectlError, match=fragment.replace("?", r"\?")):
        check_server_url(url)


@pytest.mark.parametrize("url, want", [
    ("https://198.18.0.10:6443", "https://198.18.0.10:6443"),
    (" https://h:6443/ ", "https://h:6443"),  # pasted with blanks and a slash
    ("https://[::1]:6443", "https://[::1]:6443"),
])
def test_good_server_urls(url: str, want: str) -> None:
    assert check_server_url(url) == want
