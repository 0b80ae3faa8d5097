"""Import datasets from a local folder (machines with no internet), verifying them like downloads."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grader.data import cache
from grader.data.download import install
from grader.model.errors import DataError

if TYPE_CHECKING:
    from grader.data.registry import Entry


@dataclass(frozen=True)
class Imported:
    """What happened to one dataset during an import."""

    name: str
    outcome: str  # "imported", "verified" (already cached), "not found", "failed" or "generated"
    detail: str  # the source file, or why it failed


def find_source(entry: Entry, folder: Path) -> Path | None:
    """The file in FOLDER that holds ENTRY: one of its `local` paths, else FOLDER/<file>."""
    for rel in (*entry.local, entry.file):
        if rel and (folder / rel).is_file():
            return folder / rel
    return None


def import_one(entry: Entry, source: Path, data_home: Path) -> Path:
    """Verify SOURCE as ENTRY and place it in the cache; the source folder is only read."""
    if entry.kind != "file":
        return install(entry, source, data_home, origin=str(source))
    handle, name = tempfile.mkstemp(
        prefix=f"{entry.name}-", suffix=".part", dir=cache.scratch_dir(data_home)
    )
    os.close(handle)
    part = Path(name)
    try:
        shutil.copyfile(source, part)
        return install(entry, part, data_home, origin=str(source))
    finally:
        part.unlink(missing_ok=True)


def import_dir(
    folder: Path, entries: list[Entry], *, data_home: Path, required: bool = False
) -> Iterator[Imported]:
    """Import each of ENTRIES found in FOLDER, one result at a time; one failure stops no other.

    With REQUIRED, a dataset absent from FOLDER is a failure rather than "not found".
    """
    if not folder.is_dir():
        raise DataError(
            f"{folder} is not a folder: point `grader data import` at a folder "
            "laid out like shared/datasets (e.g. DIR/mnist/mnist.npz)"
        )
    for entry in entries:
        if entry.kind == "generated":
            yield Imported(entry.name, "generated", f"made by recipe {entry.recipe!r}")
            continue
        source = find_source(entry, folder)
        if source is None:
            places = ", ".join(str(folder / rel) for rel in (*entry.local, entry.file))
            yield Imported(
                entry.name, "failed" if required else "not found", f"looked for {places}"
            )
            continue
        status = cache.check(entry, data_home)
        if status.present and not status.problem:
            yield Imported(entry.name, "verified", "already in the cache")
            continue
        try:
            import_one(entry, source, data_home)
        except DataError as error:
            yield Imported(entry.name, "failed", str(error))
            continue
        yield Imported(entry.name, "imported", str(source))
