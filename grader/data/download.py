"""Download a dataset from its canonical URL (or a mirror), verify it and cache it atomically."""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from grader.data import archive, cache
from grader.data.digest import CHUNK
from grader.model.errors import DataError

if TYPE_CHECKING:
    from grader.data.registry import Entry

Progress = Callable[[int, int], None]  # (bytes so far, total bytes or 0 when unknown)


class Transient(Exception):
    """A failure worth another try: server error, timeout, dropped or truncated transfer."""


def fetch(
    entry: Entry,
    *,
    data_home: Path,
    url: str | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 1.0,
    progress: Progress | None = None,
) -> Path:
    """Download ENTRY (from URL, default its canonical URL), verify it, install it; return its path.

    Nothing is left in the cache unless the download is complete and verified.
    """
    url = url or entry.url
    scratch = cache.scratch_dir(data_home)
    handle, name = tempfile.mkstemp(prefix=f"{entry.name}-", suffix=".part", dir=scratch)
    os.close(handle)
    part = Path(name)
    try:
        limit = entry.bytes if entry.kind == "file" else 0
        download(
            url,
            part,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            limit=limit,
            progress=progress,
        )
        return install(entry, part, data_home, origin=url)
    finally:
        part.unlink(missing_ok=True)


def install(entry: Entry, source: Path, data_home: Path, *, origin: str) -> Path:
    """Verify SOURCE (a file in the scratch folder, or any archive) and install it as ENTRY."""
    try:
        if entry.kind == "file":
            cache.verify_file(entry, source)
            return cache.install_file(entry, source, data_home)
        built = Path(tempfile.mkdtemp(prefix=f"{entry.name}-", dir=cache.scratch_dir(data_home)))
        try:
            archive.extract(entry, source, built)
            return cache.install_tree(entry, built, data_home)
        finally:
            shutil.rmtree(built, ignore_errors=True)
    except cache.Mismatch as error:
        raise DataError(
            f"{origin} does not match the registry entry {entry.name!r} ({error}); "
            "nothing was cached: check the source, or get the file from the canonical URL "
            f"{entry.url}"
        ) from None


def download(
    url: str,
    dest: Path,
    *,
    timeout: float,
    retries: int,
    backoff: float,
    limit: int = 0,
    progress: Progress | None = None,
) -> None:
    """Save URL to DEST, trying again after transient failures with a doubling pause."""
    for attempt in range(retries + 1):
        try:
            _download_once(url, dest, timeout=timeout, limit=limit, progress=progress)
            return
        except Transient as error:
            if attempt == retries:
                tries = f"{retries + 1} tries" if retries else "1 try"
                raise DataError(
                    f"cannot download {url}: {error} (gave up after {tries}); check the network "
                    "and try again, or on a machine with no internet use `grader data import DIR`"
                ) from None
            time.sleep(backoff * 2**attempt)


def _download_once(
    url: str, dest: Path, *, timeout: float, limit: int, progress: Progress | None
) -> None:
    """One attempt: stream URL into DEST, refusing short, overlong and failed transfers."""
    request = urllib.request.Request(url, headers={"User-Agent": "grader-data/1"})
    done = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if limit and done > limit:
                    raise DataError(f"{url} sends more than the expected {limit:,} bytes")
                if progress is not None:
                    progress(done, total)
    except urllib.error.HTTPError as error:
        if error.code >= 500 or error.code in (408, 429):
            raise Transient(f"server error HTTP {error.code}") from None
        raise DataError(f"cannot download {url}: HTTP {error.code} {error.reason}") from None
    except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or error
        if isinstance(reason, TimeoutError) or isinstance(error, TimeoutError):
            reason = f"no data for {timeout:g} s (timed out)"
        raise Transient(str(reason)) from None
    if total and done < total:
        raise Transient(f"transfer cut short: got {done:,} of {total:,} bytes")
