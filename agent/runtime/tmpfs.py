"""tmpfs for volumes that must never touch the disk (kubelet's medium Memory).

Secret and projected volumes, and ``emptyDir`` with ``medium: Memory``, get a
tmpfs of their own at the volume directory, mounted in the agent's mount
namespace before anything is written into it. Mounts are found again through
``/proc/self/mountinfo`` (never remembered), so an agent that restarts over
running pods still unmounts their tmpfs when the pods go. The parsing is pure;
the mount calls are ``mount(2)``/``umount2(2)`` through ctypes.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
from pathlib import Path

from edgectl.log import fields

log = logging.getLogger(__name__)

MS_NOSUID, MS_NODEV = 2, 4
MNT_DETACH = 2
MOUNTINFO = Path("/proc/self/mountinfo")

_libc = ctypes.CDLL(None, use_errno=True)
_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounts(text: str) -> list[tuple[str, str]]:
    """``(mount point, fs type)`` of every line of a mountinfo text, in order."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if "-" not in parts[6:]:
            continue
        sep = parts.index("-", 6)
        out.append((unescape(parts[4]), parts[sep + 1]))
    return out


def under(text: str, root: str) -> list[str]:
    """Mount points at or below ``root``, deepest (most recent) first: the
    order to unmount them in."""
    root = root.rstrip("/") or "/"
    found = [mp for mp, _ in mounts(text) if mp == root or mp.startswith(root + "/")]
    return list(reversed(found))


def options(*, size: int, mode: int) -> str:
    """tmpfs mount data; ``size`` in bytes (at least a page: 0 would mean unlimited)."""
    return f"mode={mode:04o},size={max(size, 4096)}"


def _mountinfo() -> str:
    return MOUNTINFO.read_text()


def fs_type(path: Path) -> str | None:
    """The filesystem type if ``path`` itself is a mount point (the last one wins)."""
    want = os.path.realpath(path)
    kind = None
    for mp, fstype in mounts(_mountinfo()):
        if mp == want:
            kind = fstype
    return kind


def ensure(path: Path, *, size: int, mode: int) -> bool:
    """Mount a tmpfs at ``path`` (created if missing) unless one is there;
    True if it mounted one. Raises OSError."""
    path.mkdir(parents=True, exist_ok=True)
    if fs_type(path) == "tmpfs":
        return False
    data = options(size=size, mode=mode).encode()
    if _libc.mount(b"tmpfs", os.fsencode(os.path.realpath(path)), b"tmpfs",
                   ctypes.c_ulong(MS_NOSUID | MS_NODEV), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {path}: {os.strerror(err)}")
    return True


def unmount_under(root: Path) -> list[str]:
    """Unmount everything mounted at or below ``root`` (a lazy detach if busy);
    returns what could not be unmounted."""
    failed = []
    for mp in under(_mountinfo(), os.path.realpath(root)):
        target = os.fsencode(mp)
        if _libc.umount2(target, 0) == 0:
            continue
        err = ctypes.get_errno()
        if err == errno.EBUSY and _libc.umount2(target, MNT_DETACH) == 0:
            continue  # still in use somewhere: gone from the tree now, freed when the last user goes
        if err != errno.EINVAL:  # EINVAL: not a mount point any more
            failed.append(f"{mp}: {os.strerror(err)}")
    return failed


def remove_tree(root: Path) -> None:
    """``rmtree`` that first unmounts what is mounted inside, and says so when
    something stays (a tmpfs left mounted would keep its contents in memory)."""
    failed = unmount_under(root) if root.exists() else []
    shutil.rmtree(root, ignore_errors=True)
    if failed or root.exists():
        log.warning("could not remove all of a pod's files", extra=fields(path=str(root), errors="; ".join(failed)))
