"""Local directories: symlink-free resolution and a listing in the same order the object stores use.

obstore's LocalStore follows symbolic links and lists in directory order, so keyrelay does not let it decide
either: a key is served only when no component below the root is a symlink (a link planted in the directory
could otherwise point anywhere on the host), and listings are produced here, sorted by full key exactly as
S3/GCS/Azure sort them (code point order of the whole path), so page tokens work the same way everywhere.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from keyrelay.errors import InvalidRequest, NotFound
from keyrelay.files.paths import check_key


@dataclass(frozen=True, slots=True)
class LocalEntry:
    key: str
    size: int
    mtime_ns: int
    etag: str


def etag_of(st: os.stat_result) -> str:
    """The same value obstore's LocalStore sends as ETag: inode, mtime in microseconds and size, in hex."""
    return f'"{st.st_ino:x}-{st.st_mtime_ns // 1000:x}-{st.st_size:x}"'


def _walk_to(root: Path, key: str) -> os.stat_result | None:
    """lstat of root/key when no component of `key` is a symlink; None when missing."""
    path = root
    st: os.stat_result | None = None
    for seg in key.split("/") if key else ():
        path = path / seg
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            return None
    return st if key else os.lstat(root)


def check_file(root: Path, key: str) -> None:
    """Raise NotFound unless root/key is a regular file reached without following a symlink."""
    st = _walk_to(root, key)
    if st is None or not stat.S_ISREG(st.st_mode):
        raise NotFound("File not found")


def _listable(name: str) -> bool:
    try:
        check_key(name)
    except InvalidRequest:
        return False
    return True


def _children(directory: Path, key: str) -> list[tuple[str, str, bool]]:
    """(sort key, relative key, is_dir) of the listable regular files and directories in `directory`."""
    out = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.is_symlink() or not _listable(entry.name):
                    continue
                child = f"{key}/{entry.name}" if key else entry.name
                if entry.is_dir(follow_symlinks=False):
                    out.append((child + "/", child, True))
                elif entry.is_file(follow_symlinks=False):
                    out.append((child, child, False))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    out.sort(reverse=True)  # consumed from the end: smallest first
    return out


def walk(root: Path, prefix: str, after: str | None) -> Iterator[LocalEntry]:
    """Files below root/prefix in full-key order, starting after the key `after` (exclusive)."""
    st = _walk_to(root, prefix)
    if st is None or not stat.S_ISDIR(st.st_mode):
        return
    stack: list[list[tuple[str, str, bool]]] = [_children(root / prefix if prefix else root, prefix)]
    while stack:
        level = stack[-1]
        if not level:
            stack.pop()
            continue
        sort_key, key, is_dir = level.pop()
        if after is not None and sort_key <= after and not after.startswith(sort_key):
            continue  # the whole entry (a file, or a directory's subtree) sorts before `after`
        if is_dir:
            stack.append(_children(root / key, key))
            continue
        if after is not None and key <= after:
            continue
        try:
            fst = os.lstat(root / key)
        except OSError:
            continue
        if stat.S_ISREG(fst.st_mode):
            yield LocalEntry(key, fst.st_size, fst.st_mtime_ns, etag_of(fst))
