"""Extract the files that matter from a zip or tar archive, hashing them on the way."""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from grader.data.cache import SUMS, Mismatch, check_content
from grader.data.digest import CHUNK, sums_text

if TYPE_CHECKING:
    from grader.data.registry import Entry

# What a damaged archive raises while it is read.
BROKEN = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError)


def wanted(entry: Entry, member: str) -> str | None:
    """MEMBER's path relative to the entry's root if the registry keeps it, else None."""
    path = PurePosixPath(member)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] != entry.root:
        return None
    rel = PurePosixPath(*path.parts[1:])
    for pattern in entry.members:
        parts = PurePosixPath(pattern).parts
        if len(parts) == len(rel.parts) and all(map(fnmatchcase, rel.parts, parts)):
            return rel.as_posix()
    return None


def extract(entry: Entry, archive: Path, dest: Path) -> dict[str, str]:
    """Write ENTRY's files from ARCHIVE under DEST/<root>/ and DEST/SHA256SUMS, or raise Mismatch.

    Only regular files whose paths match the entry's members are written, so links, absolute
    paths and ".." never leave DEST. The result is checked against the registry's digest.
    """
    sums: dict[str, str] = {}
    try:
        for rel, stream in _members(entry, archive):
            target = dest / entry.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            sums[rel] = _copy(stream, target)
    except BROKEN as error:
        raise Mismatch(f"not a readable zip or tar archive: {error}") from None
    check_content(entry, sums)
    (dest / SUMS).write_text(sums_text(sums), encoding="utf-8")
    return sums


def _members(entry: Entry, archive: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """Yield (relative path, open stream) for each kept regular file of a zip or tar archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                rel = None if info.is_dir() else wanted(entry, info.filename)
                if rel is not None:
                    with zipped.open(info) as stream:
                        yield rel, stream
        return
    with tarfile.open(archive, "r:*") as tarred:
        for member in tarred:
            rel = wanted(entry, member.name) if member.isfile() else None
            extracted = tarred.extractfile(member) if rel is not None else None
            if rel is not None and extracted is not None:
                with extracted:
                    yield rel, extracted


def _copy(stream: IO[bytes], target: Path) -> str:
    """Copy STREAM to TARGET and return the sha256 of what was written."""
    hasher = hashlib.sha256()
    with target.open("wb") as out:
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
            out.write(chunk)
    return hasher.hexdigest()
