"""kubelet's atomic-writer layout for configMap, secret, downwardAPI and projected volumes.

A volume directory looks like this::

    ..2026_11_27_06_00_00.1234567/   the files of one version (mode 0755 dirs)
    ..data -> ..2026_11_27_06_00_00.1234567
    key    -> ..data/key             one symlink per top-level user-visible name
    conf   -> ..data/conf            (items[].path "conf/app.yaml": the dir is linked)

An update writes a new timestamped dir, then swaps ``..data`` with one
``rename()`` of a fresh symlink over it. A reader that opens ``key`` resolves
``..data`` once, so it sees either the whole old set or the whole new one,
never a mix. All links are relative, so the layout works wherever the
directory is bind-mounted.

The path rules and the layout are pure functions (:func:`validate_path`,
:func:`clean_payload`, :func:`user_visible`, :func:`plan`); :func:`write`
is the thin I/O step.
"""
from __future__ import annotations

import os
import posixpath
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

DATA_DIR_LINK = "..data"
_TMP_LINK = "..data_tmp"
MAX_PATH_LENGTH = 4096  # upstream's maxPathLength / maxFileNameLength
MAX_FILE_NAME_LENGTH = 255
MAX_MODE = 0o777


class PayloadError(ValueError):
    """A path or mode that upstream's API validation or atomic writer rejects."""


@dataclass(frozen=True, kw_only=True)
class FileProjection:
    """One file of a volume: its bytes and permission bits."""

    data: bytes
    mode: int = 0o644


Payload = Mapping[str, FileProjection]


def validate_path(path: str) -> None:
    """Upstream's rules for ``items[].path`` (API validation and the writer
    agree on them): non-empty, relative, no ``..`` element, and not starting
    with ``..`` (``..data`` and the timestamped dirs are reserved)."""
    if not path:
        raise PayloadError("invalid path: must not be empty")
    if path.startswith("/"):
        raise PayloadError(f"invalid path {path!r}: must be a relative path")
    if len(path) > MAX_PATH_LENGTH:
        raise PayloadError(f"invalid path: must be at most {MAX_PATH_LENGTH} characters")
    items = path.split("/")
    for item in items:
        if item == "..":
            raise PayloadError(f"invalid path {path!r}: must not contain '..'")
        if len(item) > MAX_FILE_NAME_LENGTH:
            raise PayloadError(f"invalid path {path!r}: file names must be at most {MAX_FILE_NAME_LENGTH} characters")
    if path.startswith(".."):
        raise PayloadError(f"invalid path {path!r}: must not start with '..'")
    if "\x00" in path:
        raise PayloadError(f"invalid path {path!r}: must not contain NUL")


def validate_mode(mode: object, *, what: str) -> int:
    """A file mode as the API accepts it: an integer 0..0777."""
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= MAX_MODE:
        raise PayloadError(f"{what}: must be a number between 0 and 0777 (octal), both inclusive (got {mode!r})")
    return mode


def clean_payload(payload: Payload) -> dict[str, FileProjection]:
    """Validate every path, then normalise it (``a//b/./c`` → ``a/b/c``).
    A path that is both a file and a parent of another file is refused."""
    out: dict[str, FileProjection] = {}
    for path, proj in payload.items():
        validate_path(path)
        clean = posixpath.normpath(path)
        if clean in (".", "") or clean.startswith(".."):
            raise PayloadError(f"invalid path {path!r}: must name a file inside the volume")
        out[clean] = proj
    for path in out:
        parent = posixpath.dirname(path)
        while parent:
            if parent in out:
                raise PayloadError(f"invalid path {path!r}: {parent!r} is also a file")
            parent = posixpath.dirname(parent)
    return out


def user_visible(payload: Payload) -> set[str]:
    """The top-level names that get a symlink through ``..data``."""
    return {path.split("/", 1)[0] for path in payload}


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What one write changes, given what is on disk now."""

    write: bool  # a new timestamped dir and a ``..data`` swap are needed
    link: frozenset[str]  # user-visible names to (re)create as symlinks
    remove: frozenset[str]  # user-visible names of the old version that are gone


def plan(new: Payload, *, current: Mapping[str, FileProjection] | None, old_visible: set[str]) -> Plan:
    """Pure: compare the cleaned ``new`` payload with the files of the current
    version (``None``: no version yet) and the names linked today."""
    visible = user_visible(new)
    return Plan(write=current is None or dict(current) != dict(new),
                link=frozenset(visible), remove=frozenset(old_visible - visible))


def timestamped_name(now: float, token: str) -> str:
    """``..2006_01_02_15_04_05.<token>``, kubelet's format (UTC)."""
    return time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime(now)) + token


# ---- I/O -----------------------------------------------------------------------


def _read_version(target: Path) -> tuple[str | None, dict[str, FileProjection] | None]:
    """The current data dir's name and its files (None when unreadable)."""
    try:
        name = os.readlink(target / DATA_DIR_LINK)
    except OSError:
        return None, None
    root = target / name
    files: dict[str, FileProjection] = {}
    try:
        for dirpath, _, filenames in os.walk(root):
            for f in filenames:
                full = Path(dirpath) / f
                rel = full.relative_to(root).as_posix()
                files[rel] = FileProjection(data=full.read_bytes(), mode=full.stat().st_mode & 0o7777)
    except OSError:
        return name, None
    return name, files


def _visible_links(target: Path) -> set[str]:
    """Names in ``target`` that are our symlinks through ``..data``."""
    out = set()
    for entry in os.scandir(target):
        if entry.name.startswith(".."):
            continue
        try:
            link = os.readlink(entry.path)
        except OSError:
            continue
        if link == DATA_DIR_LINK + "/" + entry.name:
            out.add(entry.name)
    return out


def write(target: Path, payload: Payload, *, now: float | None = None) -> bool:
    """Make ``target`` hold exactly ``payload``; return True if anything changed.

    Steps as kubelet's writer: write the new version into a fresh timestamped
    dir, point ``..data_tmp`` at it and rename it over ``..data`` (the atomic
    switch), create the user-visible links, remove links of names that are
    gone, then remove the old version."""
    files = clean_payload(payload)
    target.mkdir(parents=True, exist_ok=True)
    _, current = _read_version(target)
    step = plan(files, current=current, old_visible=_visible_links(target))
    if not step.write and all((target / n).is_symlink() for n in step.link):
        return False
    new_name = timestamped_name(time.time() if now is None else now, secrets.token_hex(5))
    new_dir = target / new_name
    new_dir.mkdir(mode=0o755)
    os.chmod(new_dir, 0o755)  # whatever the umask: group and others must traverse it
    try:
        for rel, proj in files.items():
            path = new_dir / rel
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.write(proj.data)
            os.chmod(path, proj.mode)
        tmp = target / _TMP_LINK
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(new_name, tmp)
        os.rename(tmp, target / DATA_DIR_LINK)
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    for name in step.link:
        link = target / name
        want = DATA_DIR_LINK + "/" + name
        if link.is_symlink() and os.readlink(link) == want:
            continue
        if link.exists() or link.is_symlink():
            # Something else sits where a key goes (not ours): the key wins, as upstream.
            shutil.rmtree(link) if link.is_dir() and not link.is_symlink() else link.unlink()
        os.symlink(want, link)
    for name in step.remove:
        (target / name).unlink(missing_ok=True)
    for entry in os.scandir(target):  # the old version, and leftovers of a crashed write
        if entry.name.startswith("..") and entry.name not in (DATA_DIR_LINK, new_name) and entry.is_dir(
                follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
    return True
