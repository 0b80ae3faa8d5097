"""The dataset registry (registry.toml, shipped beside this module) and the verified raw inputs
of a recipe."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from grader.data import cache
from grader.model.errors import DataError
from grader.model.paths import package_file
from grader.model.schema import (
    NOT_EMPTY,
    NOT_NEGATIVE,
    PLAIN_NAME,
    RELATIVE_PATHS,
    Rule,
    from_table,
    hex_digest,
    plain_name,
    setting,
)

KINDS = ("file", "archive", "generated")
KIND = Rule(lambda v: v in KINDS, f"one of {', '.join(KINDS)}")
URL = Rule(lambda v: v == "" or v.startswith(("https://", "http://")), "an http:// or https:// URL")
OPTIONAL_NAME = Rule(lambda v: v == "" or plain_name(v), PLAIN_NAME.expect)
# What each kind needs besides title, terms and citation (a hash of kind "file" is checked apart).
NEEDED = {
    "file": ("url", "file", "bytes"),
    "archive": ("url", "file", "root", "members", "content_files", "content_sha256"),
    "generated": ("recipe",),
}


def default_registry() -> Traversable:
    """The registry shipped inside the grader package."""
    return package_file("data", "registry.toml")


@dataclass(frozen=True)
class Entry:
    """One dataset of the registry; see the comment at the top of registry.toml."""

    name: str  # the registry key, used on the command line and in recipe INPUTS
    title: str = setting(rule=NOT_EMPTY)  # what it is, in a few words
    kind: str = setting(rule=KIND)  # "file", "archive" or "generated"
    terms: str = setting(rule=NOT_EMPTY)  # licence or terms of use, one line
    citation: str = setting(rule=NOT_EMPTY)  # what to cite
    url: str = setting("", URL)  # canonical download URL
    file: str = setting("", OPTIONAL_NAME)  # canonical file name
    bytes: int = setting(0, NOT_NEGATIVE)  # size of the canonical download
    sha256: str = setting("", hex_digest(64))  # kind file: sha256 of the file
    md5: str = setting("", hex_digest(32))  # kind file: md5, where that is what the publisher gives
    archive_md5: str = setting("", hex_digest(32))  # kind archive: publisher's md5 (not required)
    root: str = setting("", OPTIONAL_NAME)  # kind archive: top folder inside the archive
    members: tuple[str, ...] = setting((), RELATIVE_PATHS)  # kind archive: patterns of files kept
    content_files: int = setting(0, NOT_NEGATIVE)  # kind archive: how many files match members
    content_sha256: str = setting("", hex_digest(64))  # kind archive: digest over those files
    local: tuple[str, ...] = setting((), RELATIVE_PATHS)  # where `grader data import DIR` looks
    recipe: str = setting("", OPTIONAL_NAME)  # kind generated: the recipe that makes it

    @property
    def content_hash(self) -> str:
        """The hash that identifies this dataset's verified content (for cache keys)."""
        return self.sha256 or self.md5 or self.content_sha256 or f"generated:{self.recipe}"


@dataclass(frozen=True)
class Registry(Mapping[str, Entry]):
    """All registry entries by name, in file order."""

    entries: tuple[Entry, ...]
    path: str  # where it was read from, for messages

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


def load_registry(path: Path | Traversable | None = None) -> Registry:
    """Read and check a registry file; PATH defaults to the registry shipped with the grader."""
    path = path or default_registry()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise DataError(f"cannot read the dataset registry {path}: {error}") from None
    return Registry(tuple(_entry(name, item, str(path)) for name, item in table.items()), str(path))


def _entry(name: str, item: object, where: str) -> Entry:
    """Build one Entry from its TOML table; any problem is one line naming the file and the key."""
    if not plain_name(name):
        raise DataError(f"{where}: [{name}] must be {PLAIN_NAME.expect}: it names a cache folder")
    entry: Entry = from_table(Entry, item, where=where, error=DataError, prefix=f"{name}.",
                              given={"name": name})
    missing = [key for key in NEEDED[entry.kind] if not getattr(entry, key)]
    if entry.kind == "file" and not (entry.sha256 or entry.md5):
        missing.append("sha256 or md5")
    if missing:
        raise DataError(f"{where}: {name}.{missing[0]} is missing: kind {entry.kind!r} needs "
                        f"{', '.join(NEEDED[entry.kind])} (non-empty, above 0)")
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
