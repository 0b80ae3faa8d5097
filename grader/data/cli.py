"""`grader data list|fetch|import`: see, download and import the course's datasets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grader.data import cache
from grader.data.download import Progress, fetch
from grader.data.importing import import_dir
from grader.data.registry import Registry, load_registry, mirror_url
from grader.model import paths
from grader.model.errors import DataError, GraderError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `data` command group and its list, fetch and import commands."""
    data = subparsers.add_parser(
        "data",
        help="list, fetch and import the course's datasets",
        description="Manage the dataset cache ($GRADER_DATA_HOME, default ~/.cache/grader).",
    )
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    listing = commands.add_parser(
        "list",
        help="show each dataset: present or not, verified or not, size, terms",
        description="Re-hash every cached dataset and show whether it matches the registry.",
    )
    _common(listing)
    listing.set_defaults(handler=run_list)

    fetching = commands.add_parser(
        "fetch",
        help="download datasets from their canonical URLs, verify and cache them",
        description="Download, verify against the registry, and move into the cache atomically.",
    )
    fetching.add_argument("names", nargs="*", metavar="NAME", help="datasets to fetch")
    fetching.add_argument("--all", action="store_true", help="fetch every dataset not yet cached")
    fetching.add_argument(
        "--mirror",
        metavar="URL",
        help="download MIRROR/<file> instead (default: $GRADER_DATA_MIRROR)",
    )
    fetching.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up on a connection silent this long (default: 60)",
    )
    fetching.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="more tries after a server error, timeout or cut transfer (default: 3)",
    )
    fetching.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="first pause between tries, doubled each time (default: 1)",
    )
    _common(fetching)
    fetching.set_defaults(handler=run_fetch)

    importing = commands.add_parser(
        "import",
        help="verify and cache datasets from a local folder (no internet needed)",
        description="Import from a folder laid out like shared/datasets, e.g. DIR/mnist/mnist.npz.",
    )
    importing.add_argument("folder", type=Path, metavar="DIR", help="folder holding the files")
    importing.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="datasets to import (default: every one found in DIR)",
    )
    _common(importing)
    importing.set_defaults(handler=run_import)


def _common(parser: argparse.ArgumentParser) -> None:
    """Options every data command takes."""
    parser.add_argument(
        "--data-home",
        metavar="DIR",
        help="dataset cache (default: $GRADER_DATA_HOME, else ~/.cache/grader)",
    )
    parser.add_argument(
        "--course",
        metavar="DIR",
        help="course folder whose datasets/registry.toml to use (default: found "
        "from here, else the grader's own registry)",
    )
    parser.add_argument(
        "--registry", type=Path, metavar="FILE", help="registry file to use instead of the course's"
    )


def _context(args: argparse.Namespace) -> tuple[Registry, Path]:
    """The registry and data home the command works on."""
    return load_registry(args.registry or _course_registry(args.course)), paths.data_home(
        args.data_home
    )


def _course_registry(course: str | None) -> Path | None:
    """The course's datasets/registry.toml if there is one (None: the grader's own)."""
    try:
        root = paths.course_root(course)
    except GraderError:
        if course is not None:
            raise
        return None
    path = root / "datasets" / "registry.toml"
    return path if path.is_file() else None


def run_list(args: argparse.Namespace) -> int:
    """Print one line per dataset; exit 1 if any cached copy is corrupt."""
    registry, home = _context(args)
    print(f"cache: {home}")
    print(f"{'NAME':<16} {'STATUS':<10} {'SIZE':>9}  TERMS")
    corrupt = missing = 0
    for entry in registry.values():
        status = cache.check(entry, home)
        state = (
            "generated"
            if entry.kind == "generated"
            else "CORRUPT"
            if status.problem
            else "verified"
            if status.present
            else "missing"
        )
        size = _human(status.size if status.present else entry.bytes)
        print(f"{entry.name:<16} {state:<10} {size:>9}  {entry.terms}")
        if status.problem:
            corrupt += 1
            print(f"  {status.problem}: {cache.repair_hint(entry, home)}")
        missing += not status.present
    if missing:
        print(
            "get the missing ones with `grader data fetch --all`, "
            "or with no internet `grader data import DIR`"
        )
    return 1 if corrupt else 0


def run_fetch(args: argparse.Namespace) -> int:
    """Download the named datasets (or all missing ones with --all)."""
    registry, home = _context(args)
    if bool(args.names) == args.all:
        raise DataError(
            "name the datasets to fetch, or pass --all (not both): "
            f"`grader data fetch {' | '.join(registry)}`"
        )
    entries = [registry.entry(n) for n in args.names] if args.names else list(registry.values())
    for entry in entries:
        status = cache.check(entry, home)
        if entry.kind == "generated" or (status.present and not status.problem):
            print(
                f"{entry.name}: {'generated' if entry.kind == 'generated' else 'verified'}, "
                "nothing to fetch"
            )
            continue
        url = mirror_url(entry, args.mirror)
        with _progress_bar(f"{entry.name} ({entry.file})") as progress:
            path = fetch(
                entry,
                data_home=home,
                url=url,
                timeout=args.timeout,
                retries=args.retries,
                backoff=args.backoff,
                progress=progress,
            )
        print(f"{entry.name}: downloaded from {url}, verified, cached at {path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Import what the folder holds; fail (after importing the rest) if any file is bad."""
    registry, home = _context(args)
    entries = [registry.entry(n) for n in args.names] if args.names else list(registry.values())
    failed = []
    for result in import_dir(args.folder, entries, data_home=home, required=bool(args.names)):
        print(f"{result.name}: {result.outcome} ({result.detail})")
        if result.outcome == "failed":
            failed.append(result.name)
    if failed:
        raise DataError(
            f"{len(failed)} dataset(s) not imported: {', '.join(failed)} "
            "(reasons above); fix or replace those files and run the import again"
        )
    return 0


@contextmanager
def _progress_bar(label: str) -> Iterator[Progress]:
    """A rich progress bar on stderr when it is a terminal, fed by (bytes so far, total)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, TransferSpeedColumn
    from rich.progress import Progress as Bar

    console = Console(stderr=True)
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Bar(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def _human(size: int) -> str:
    """A byte count for people: 11.5 MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return ""


def main(argv: list[str] | None = None) -> int:
    """Run `python -m grader.data.cli data ...` on its own, as the grader CLI will."""
    parser = argparse.ArgumentParser(prog="grader")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except GraderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
