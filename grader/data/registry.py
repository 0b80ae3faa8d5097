"""The dataset registry (datasets/registry.toml) and the verified raw inputs of a recipe."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import DataError
from . import cache

DEFAULT_REGISTRY = Path(__file__).resolve().parents[2] / "datasets" / "registry.toml"
KINDS = ("file", "archive", "generated")


@dataclass(frozen=True)
class Entry:
    """One dataset of the registry; see the comment at the top of registry.toml."""

    name: str  # the registry key, used on the command line and in recipe INPUTS
    title: str  # what it is, in a few words
    kind: str  # "file", "archive" or "generated"
    terms: str  # licence or terms of use, one line
    citation: str  # what to cite
    url: str = ""  # canonical download URL
    file: str = ""  # canonical file name
    bytes: int = 0  # size of the canonical download
    sha256: str = ""  # kind file: sha256 of the file
    md5: str = ""  # kind file: md5, where that is what the publisher gives
    archive_md5: str = ""  # kind archive: publisher's md5 of the canonical archive (not required)
    root: str = ""  # kind archive: top folder inside the archive
    members: tuple[str, ...] = ()  # kind archive: patterns (relative to root) of the files kept
    content_files: int = 0  # kind archive: how many files match members
    content_sha256: str = ""  # kind archive: digest over those files (grader.data.digest)
    local: tuple[str, ...] = ()  # where `grader data import DIR` looks, relative to DIR
    recipe: str = ""  # kind generated: the recipe that makes it

    @property
    def content_hash(self) -> str:
        """The hash that identifies this dataset's verified content (for cache keys)."""
        return self.sha256 or self.md5 or self.content_sha256 or f"generated:{self.recipe}"


@dataclass(frozen=True)
class Registry(Mapping[str, Entry]):
    """All registry entries by name, in file order."""

    entries: tuple[Entry, ...]
    path: Path

    def __getitem__(self, name: str) -> Entry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def entry(self, name: str) -> Entry:
        """The entry called NAME, or a DataError that lists the known names."""
        if name not in self:
            known = ", ".join(self)
            raise DataError(f"no dataset {name!r} in the registry {self.path} (known: {known})")
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return (entry.name for entry in self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def load_registry(path: Path | None = None) -> Registry:
    """Read and check a registry file; PATH defaults to the grader's datasets/registry.toml."""
    path = path or DEFAULT_REGISTRY
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise DataError(f"cannot read the dataset registry {path}: {error}") from None
    return Registry(tuple(_entry(name, item, path) for name, item in table.items()), path)


def _entry(name: str, item: dict[str, object], path: Path) -> Entry:
    """Build one Entry from its TOML table, refusing unknown keys and incomplete entries."""
    known = {f.name for f in fields(Entry)} - {"name"}
    unknown = set(item) - known
    if unknown:
        raise DataError(f"{path}: [{name}] has unknown keys {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in item.items()}
    try:
        entry = Entry(name=name, **values)  # type: ignore[arg-type]
    except TypeError as error:
        raise DataError(f"{path}: [{name}] is incomplete: {error}") from None
    needed = {
        "file": ("url", "file", "bytes"),
        "archive": ("url", "file", "root", "members", "content_files", "content_sha256"),
        "generated": ("recipe",),
    }.get(entry.kind)
    if needed is None:
        raise DataError(f"{path}: [{name}] has kind {entry.kind!r}, expected one of {KINDS}")
    missing = [key for key in needed if not getattr(entry, key)]
    if entry.kind == "file" and not (entry.sha256 or entry.md5):
        missing.append("sha256 or md5")
    if missing:
        raise DataError(f"{path}: [{name}] lacks {', '.join(missing)}")
    return entry


def raw_inputs(
    names: list[str], *, data_home: Path, registry: Registry | None = None
) -> dict[str, Path]:
    """Verify each named dataset in the cache and return where it is.

    A kind "file" dataset maps to the cached file; a kind "archive" dataset maps to the cached
    copy of its root folder (e.g. .../raw/imdb_reviews/aclImdb). Every file is re-hashed on each
    call, so a flipped byte is caught before a recipe reads it.
    """
    registry = registry or load_registry()
    return {name: cache.require(registry.entry(name), data_home) for name in names}


def mirror_url(entry: Entry, mirror: str | None = None) -> str:
    """The URL to download ENTRY from: MIRROR/<file> when a mirror is set, else its canonical URL."""
    mirror = mirror or os.environ.get("GRADER_DATA_MIRROR") or None
    return f"{mirror.rstrip('/')}/{entry.file}" if mirror else entry.url
