"""The options the commands share, each declared once, and checks of command-line values that
the argument parser cannot make: one clear error each. Light to import: grader.cli.early parses
`grader run`'s options with it before the rest of the command line is imported."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from grader.grading.executor import Settings
from grader.model.errors import GraderError
from grader.reports import similarity

DEFAULTS = Settings()
GRADEBOOK_HELP = ("the gradebook: a SQLite file (default gradebook.sqlite) or a database URL such as "
                  "postgresql://USER:PASSWORD@HOST/DATABASE (needs the postgres extra); its schema "
                  "is migrated when it is opened")


def common(p: argparse.ArgumentParser, *, assignment: bool = True) -> None:
    """The arguments of every course command: the ASSIGNMENT it works on, where it names one, and
    --course."""
    if assignment:
        p.add_argument("assignment", help="assignment name, e.g. assignment01")
    p.add_argument("--course", help="course folder holding assignments/ (default: found from here)")


def run_options(p: argparse.ArgumentParser) -> None:
    """The arguments of `grader run`: the command and grader.cli.early both parse them."""
    common(p)
    p.add_argument("--submissions", required=True,
                   help="folder with DIR/STUDENT.ipynb or DIR/STUDENT/*.ipynb")
    p.add_argument("--gradebook", default="gradebook.sqlite",
                   help=GRADEBOOK_HELP)
    p.add_argument("--reports", help="folder for feedback pages (default reports/ASSIGNMENT)")
    p.add_argument("--force", action="store_true",
                   help="regrade submissions already graded (one grader run at a time still grades each)")
    p.add_argument("--regrade-new-grader", action="store_true",
                   help="regrade the results another grader (an older grading code) gave; without "
                        "it they are kept, and counted in the closing line")
    p.add_argument("--executor", choices=("local", "ray"), default=DEFAULTS.executor,
                   help="local: kernels on this machine (see --workers); ray: one Ray task per "
                        "submission on a Ray cluster (pip install 'grader[ray]'), each asking for "
                        "a CPU, limits.memory_mb plus 1 GB, and 1/K of a GPU where the cluster has "
                        f"GPUs (--per-gpu K); --workers caps the tasks at once (default {DEFAULTS.executor})")
    p.add_argument("--address", metavar="ADDR",
                   help="with --executor ray: the cluster to grade on, e.g. 10.0.0.1:6379 or auto "
                        "(default: a local Ray instance started and stopped by the command)")
    similar_option(p)
    grading_options(p)


def grading_options(p: argparse.ArgumentParser, *, workers: str = "auto") -> None:
    """The options of the commands that grade: workers, GPUs, data, HTML, sandbox."""
    p.add_argument("--workers", default=workers, metavar="N",
                   help="submissions graded at once, each in its own kernel: a number, or auto "
                        "(one per GPU slot, see --per-gpu; on the CPU, one per core as far as the "
                        f"memory holds them); with GPUs, at most the slots (default: {workers})")
    gpu_options(p)
    p.add_argument("--data-home", help="dataset cache (default $GRADER_DATA_HOME or ~/.cache/grader)")
    p.add_argument("--no-notebook-html", action="store_true",
                   help="do not write each executed notebook as HTML beside its feedback")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run kernels without the bubblewrap sandbox (reports say so)")


def similar_option(p: argparse.ArgumentParser) -> None:
    """--similar, the code similarity from which the summary page lists a pair."""
    p.add_argument("--similar", type=percent, default=similarity.CODE_THRESHOLD, metavar="PERCENT",
                   help="list on the summary page (staff only) the pairs of submissions whose "
                        "written code is at least this alike, each with a side-by-side page "
                        f"(default {similarity.CODE_THRESHOLD * 100:.0f})")


def gpu_options(p: argparse.ArgumentParser) -> None:
    """--gpus and --per-gpu: which GPUs the kernels get, and how many kernels share each."""
    p.add_argument("--gpus", default="auto",
                   help="GPUs for the kernels: auto (every GPU nvidia-smi lists, else the CPU), "
                        "none, or indices like 0,1 (default auto)")
    p.add_argument("--per-gpu", default=str(DEFAULTS.per_gpu), metavar="K",
                   help="kernels each GPU runs at once; each kernel's TensorFlow may use 1/K of "
                        f"the GPU's memory (default {DEFAULTS.per_gpu})")


def percent(text: str) -> float:
    """The value of --similar, a whole percentage, as a fraction."""
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"must be a whole percentage from 1 to 100; found {text!r}")
    return int(text) / 100


def reports_folder(path: Path) -> Path:
    """PATH, once it is sure the report pages can be written there (it is made when missing)."""
    if path.exists() and not path.is_dir():
        raise GraderError(f"--reports {path} is a file, not a folder: pass a folder for the "
                          "pages (it is made if missing)")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise GraderError(f"--reports {path} cannot be made: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GraderError(f"--reports {path} cannot be written: no permission in {existing}")
    return path


def gradebook_target(text: str) -> str:
    """The value of --gradebook for a command that may make a new gradebook: a database URL, or
    a file in a folder that exists; a mistyped folder would make a new, empty gradebook, and the
    next run would grade everything again."""
    if "://" not in text and not Path(text).absolute().parent.is_dir():
        raise GraderError(f"--gradebook {text}: there is no folder {Path(text).parent}; check the"
                          " path (a new gradebook is made only in a folder that exists)")
    return text


def workers(text: str | int | None) -> int | None:
    """The value of --workers: a number of kernels, or None for auto."""
    value = str(text if text is not None else "auto").strip()
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise GraderError(f"--workers must be auto or a whole number, 1 or more; found {text!r}")
    return int(value)
