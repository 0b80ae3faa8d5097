"""The raw-data cache: where each dataset lives, whether it is intact, and atomic installs.

Layout under the data home (see datasets/README.md):

    raw/<name>/<file>                  kind "file": the file as published
    raw/<name>/<root>/...              kind "archive": the extracted files that matter
    raw/<name>/SHA256SUMS              kind "archive": their hashes, recorded at install time
    raw/.tmp/                          partial downloads and extractions, same file system

Every check re-hashes the cached bytes and compares them with the registry, never with a stamp
the cache could have rewritten itself; SHA256SUMS only helps to name the file that changed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grader.data.digest import file_hashes, hash_tree, parse_sums, tree_digest
from grader.model import paths
from grader.model.errors import DataError

if TYPE_CHECKING:
    from grader.data.registry import Entry

SUMS = "SHA256SUMS"


class Mismatch(Exception):
    """Some bytes are not the ones the registry describes; the message says which."""


@dataclass(frozen=True)
class Status:
    """What the cache holds for one dataset."""

    present: bool  # something is cached under its name
    problem: str  # why the cached copy cannot be used; "" when it is verified
    size: int  # bytes on disk


def entry_dir(entry: Entry, data_home: Path) -> Path:
    """The cache folder of one dataset."""
    return data_home / "raw" / entry.name


def cached_path(entry: Entry, data_home: Path) -> Path:
    """What recipes receive: the cached file, or the cached copy of the archive's root folder."""
    if entry.kind == "archive":
        return entry_dir(entry, data_home) / entry.root
    return entry_dir(entry, data_home) / entry.file


def scratch_dir(data_home: Path) -> Path:
    """A folder for partial files, on the cache's file system so that os.replace is atomic."""
    folder = data_home / "raw" / ".tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check(entry: Entry, data_home: Path) -> Status:
    """Re-hash the cached copy of ENTRY and say whether it matches the registry."""
    if entry.kind == "generated":
        return Status(present=True, problem="", size=0)
    path = cached_path(entry, data_home)
    if not path.exists():
        return Status(present=False, problem="", size=0)
    try:
        if entry.kind == "archive":
            verify_tree(entry, path, recorded=entry_dir(entry, data_home) / SUMS)
        else:
            verify_file(entry, path)
    except Mismatch as error:
        return Status(present=True, problem=str(error), size=_size(path))
    return Status(present=True, problem="", size=_size(path))


def require(entry: Entry, data_home: Path) -> Path:
    """The verified cached copy of ENTRY, or a DataError that says how to get a good one."""
    if entry.kind == "generated":
        raise DataError(
            f"dataset {entry.name!r} is made by recipe {entry.recipe!r}: it is no recipe's input"
        )
    status = check(entry, data_home)
    if not status.present:
        raise DataError(
            f"dataset {entry.name!r} is not in the cache {data_home}: {repair_hint(entry, data_home)}"
        )
    if status.problem:
        raise DataError(
            f"cached dataset {entry.name!r} is corrupt ({status.problem}), so it was not used: "
            f"{repair_hint(entry, data_home)}"
        )
    return cached_path(entry, data_home)


def repair_hint(entry: Entry, data_home: Path) -> str:
    """The commands that (re)place ENTRY in this cache."""
    home = "" if data_home.resolve() == paths.data_home() else f" --data-home {data_home}"
    return (
        f"run `grader data fetch {entry.name}{home}`, or with no internet "
        f"`grader data import DIR{home}` (DIR laid out like shared/datasets)"
    )


def verify_file(entry: Entry, path: Path) -> None:
    """Raise Mismatch unless PATH has the size and hashes the registry gives for ENTRY."""
    size = path.stat().st_size
    if entry.bytes and size != entry.bytes:
        raise Mismatch(f"{entry.file} has {size:,} bytes, expected {entry.bytes:,}")
    wanted = {
        algo: value for algo, value in (("sha256", entry.sha256), ("md5", entry.md5)) if value
    }
    found = file_hashes(path, tuple(wanted))
    for algo, value in wanted.items():
        if found[algo] != value:
            raise Mismatch(f"{entry.file} has {algo} {found[algo]}, expected {value}")


def verify_tree(entry: Entry, root: Path, *, recorded: Path | None = None) -> None:
    """Raise Mismatch unless the files under ROOT are exactly the registry's content of ENTRY."""
    sums = hash_tree(root)
    if len(sums) == entry.content_files and tree_digest(sums) == entry.content_sha256:
        return
    raise Mismatch(describe_difference(entry, sums, recorded))


def check_content(entry: Entry, sums: dict[str, str]) -> None:
    """Raise Mismatch unless SUMS (path -> sha256 of extracted files) is ENTRY's content."""
    if len(sums) != entry.content_files:
        raise Mismatch(
            f"{len(sums):,} files match {entry.members}, expected {entry.content_files:,}"
        )
    digest = tree_digest(sums)
    if digest != entry.content_sha256:
        raise Mismatch(f"content digest {digest}, expected {entry.content_sha256}")


def describe_difference(entry: Entry, sums: dict[str, str], recorded: Path | None) -> str:
    """Name the files that differ from the install-time record, when that record is itself good."""
    good: dict[str, str] = {}
    if recorded is not None and recorded.is_file():
        good = parse_sums(recorded.read_text(encoding="utf-8"))
    if not good or tree_digest(good) != entry.content_sha256:
        try:
            check_content(entry, sums)
        except Mismatch as error:
            return str(error)
        return "content differs from the registry"
    changed = sorted(rel for rel in good if rel in sums and sums[rel] != good[rel])
    missing = sorted(set(good) - set(sums))
    extra = sorted(set(sums) - set(good))
    parts = [
        f"{len(found)} {what}, e.g. {entry.root}/{found[0]}"
        for what, found in (("changed", changed), ("missing", missing), ("unexpected", extra))
        if found
    ]
    return "; ".join(parts) or "content differs from the registry"


def install_file(entry: Entry, verified: Path, data_home: Path) -> Path:
    """Move a verified file (in the scratch folder) into the cache in one atomic rename."""
    target = cached_path(entry, data_home)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(verified, 0o644)  # mkstemp made it private; the cache may be shared by a team
    os.replace(verified, target)
    return target


def install_tree(entry: Entry, built: Path, data_home: Path) -> Path:
    """Swap a verified folder (<root>/ and SHA256SUMS, in the scratch folder) into the cache."""
    target = entry_dir(entry, data_home)
    old = Path(tempfile.mkdtemp(prefix=f"{entry.name}-old-", dir=scratch_dir(data_home)))
    os.chmod(built, 0o755)  # mkdtemp made it private; the cache may be shared by a team
    try:
        if target.exists():
            os.replace(target, old / "entry")
        os.replace(built, target)
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return target / entry.root


def _size(path: Path) -> int:
    """Bytes of a file, or of all files under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
