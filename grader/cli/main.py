"""The command line: `grader list | release | bundle | check | validate | collect | run | report |
review | export | feedback | doctor | data`."""

from __future__ import annotations

import argparse
import getpass
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from grader.cli import doctor, options
from grader.cli.common import assignment_of, console, plain, prepared_of, reports_dir, similar_pairs
from grader.cli.run import cmd_run, cmd_validate
from grader.course import bundle, collect, export, handback, release, review
from grader.course.roster import read_roster
from grader.data import cli as data_cli
from grader.grading import devices
from grader.isolation import sandbox
from grader.model import late
from grader.model.assignments import Assignment, list_assignments, load_assignment
from grader.model.errors import GraderError, PreflightFailed, ValidationFailed
from grader.model.paths import course_root
from grader.model.result import GRADER_FAULT, Result
from grader.model.text import for_terminal
from grader.reports import similarity
from grader.reports.pages import page_is_current, write_feedback_pages, write_summary
from grader.store.gradebook import Gradebook


def cmd_list(args: argparse.Namespace) -> int:
    """List the course's assignments."""
    table = Table("assignment", "title", "points", "check files")
    for a in list_assignments(course_root(args.course)):
        table.add_row(a.name, a.config.title, f"{a.config.points:g}", str(len(a.check_files())))
    console.print(table)
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    """Write the starter notebook from the instructor notebook; refuse if anything leaks."""
    assignment = assignment_of(args)
    source = release.read_source(assignment)
    starter = release.make_starter(source)
    hidden = [p.read_text(encoding="utf-8") for p in sorted(assignment.hidden_checks.rglob("*.py"))]
    leaks = release.find_leaks(starter, source, hidden)
    if leaks:
        raise GraderError(f"the starter would leak {len(leaks)} thing(s), first {leaks[0]}: "
                          "mark it as a solution or move it out of the notebook")
    release.write_notebook(starter, assignment.release_notebook)
    console.print(f"wrote {assignment.release_notebook}")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    """Write the student bundle: starter, student data, public checks, bundle.toml, README."""
    assignment = assignment_of(args)
    members = bundle.write_bundle(assignment, prepared_of(assignment, args), Path(args.output))
    console.print(f"wrote {args.output}: {len(members)} files in {assignment.name}/ (the "
                  "starter, the student data, the public checks, bundle.toml and README.md)",
                  highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Run a notebook with the public checks only, as a student checks it before handing in."""
    notebook = Path(args.notebook)
    if not notebook.is_file():
        raise GraderError(f"no notebook at {notebook}: name the .ipynb file you want checked")
    sandboxed = sandbox.bwrap() is not None
    if not sandboxed:
        console.print("bubblewrap is missing or cannot make a sandbox here: the notebook runs "
                      "without the sandbox (grading will run it in one)", highlight=False)
    device = devices.slots(devices.choose(args.gpus), 1)[0]
    with tempfile.TemporaryDirectory(prefix="grader-check-") as tmp:
        folder = _bundle_folder(args, notebook, Path(tmp))
        (Path(tmp) / "no-hidden").mkdir()
        bundled = bundle.open_bundle(folder, Path(tmp) / "no-hidden")
        info = bundled.info
        console.print(f"checking {notebook} with the public checks of {info.assignment}"
                      f"{'' if sandboxed else ' (no sandbox)'}", highlight=False, markup=False)
        result, _ = bundle.check_notebook(bundled, notebook.resolve(), sandboxed=sandboxed,
                                          device=device)
    return _print_check(result, info)


def _bundle_folder(args: argparse.Namespace, notebook: Path, tmp: Path) -> Path:
    """The unzipped bundle to check against: --assignment (a bundle folder, or an assignment of
    the course, bundled into TMP), else the notebook's folder or the working directory."""
    chosen = args.assignment
    if chosen and Path(chosen).is_dir():
        return Path(chosen)
    if chosen:
        assignment = load_assignment(course_root(args.course), chosen)
        bundle.lay_out(bundle.bundle_files(assignment, prepared_of(assignment, args)), tmp / "bundle")
        return tmp / "bundle"
    for folder in (notebook.resolve().parent, Path.cwd()):
        if (folder / bundle.INFO).is_file():
            return folder
    raise GraderError(f"no {bundle.INFO} beside {notebook} or here: run `grader check` inside the "
                      "unzipped bundle folder, or pass --assignment BUNDLE_FOLDER")


def _print_check(result: Result, info: bundle.BundleInfo) -> int:
    """Each public check with its points and message, the public total and the hidden points."""
    if result.status == GRADER_FAULT:
        print(f"error: the notebook could not be checked here (not your fault): "
              f"{result.staff_detail.strip()[-1500:]}", file=sys.stderr)
        return 1
    table = Table("check", "points", "result", "message", title="public checks")
    for c in result.checks:
        table.add_row(escape(c.name), f"{c.points:g}/{c.max_points:g}", c.outcome,
                      escape(c.message or c.description))
    console.print(table)
    if result.reason:
        evalue = (result.failed_cell or {}).get("evalue", "")
        console.print(f"the notebook: {result.reason}{f': {evalue[:300]}' if evalue else ''}",
                      highlight=False, markup=False)
    console.print(f"public checks: {result.score:g}/{info.public_points:g} points", highlight=False)
    console.print(f"hidden checks: {info.hidden_points:g} more points, graded only after you hand "
                  "in (not checked here)", highlight=False)
    if info.written_points:
        points = f"{info.written_points:g} more point{'' if info.written_points == 1 else 's'}"
        console.print(f"written answers: {points}, graded by the staff", highlight=False)
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    """Zip each student's feedback page and executed notebook, one folder each, for the LMS."""
    assignment = assignment_of(args)
    roster = read_roster(Path(args.roster)) if args.roster else None
    results = _stored(args, assignment)
    reports = reports_dir(args, assignment)
    title = assignment.config.title
    # a page missing, or one of another run (a resubmission, a regrade), is written again first
    stale = [r for r in results if r.counted
             and not page_is_current(r, title=title, folder=reports, notebook_html=None)]
    if stale:
        for problem in write_feedback_pages(stale, title=title, folder=reports, notebook_html=True):
            print(f"warning: {for_terminal(problem)}", file=sys.stderr)
    pages = handback.pages_of(results, reports, roster)
    for student, why in pages.left_out:
        print(f"warning: {for_terminal(student, cap=100)} left out: {for_terminal(why)}",
              file=sys.stderr)
    if not pages.members:
        raise GraderError(f"no feedback page to release for {assignment.name} (see the warnings)")
    handback.write_zip(pages, Path(args.zip))
    students = len({m.split("/", 1)[0] for m in pages.members})
    console.print(f"wrote {args.zip}: the pages of {students} student(s), one folder each",
                  highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    """Collect the latest notebook of each student from an LMS download into DIR/STUDENT.ipynb."""
    assignment = assignment_of(args)
    roster = read_roster(Path(args.roster)) if args.roster else None
    done = collect.collect(Path(args.source), Path(args.output), roster=roster,
                           assignment=assignment.name, notebook_name=assignment.config.notebook)
    table = Table("student", "name", "lms id", "file", "submitted at", "late",
                  title=escape(f"collected into {done.folder}"))
    for c in done.collected:  # names come from the archive: never read as rich markup
        table.add_row(*(plain(v, cap=100) for v in (c.student, c.name, c.lms_id, c.source)),
                      c.submitted_at.strftime("%Y-%m-%d %H:%M %z"), "LATE" if c.late else "")
    console.print(table)
    for s in done.skipped:
        line = for_terminal(f"{s.kind}: {s.path}: {s.why}")  # the archive's names
        if s.kind in ("refused", "unmapped"):
            print(f"warning: {line}", file=sys.stderr)
        else:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    for entry in done.missing:
        print(for_terminal(f"warning: no hand-in from {entry.student}"
                           f"{f' ({entry.name})' if entry.name else ''} of the roster"), file=sys.stderr)
    if not done.collected:
        raise GraderError(f"no notebook could be collected from {args.source} (see the lines above)")
    console.print(f"{len(done.collected)} collected; grade them with `grader run {assignment.name} "
                  f"--submissions {done.folder}`", highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write feedback pages and the summary again from the gradebook."""
    assignment = assignment_of(args)
    results = _stored(args, assignment)
    reports = reports_dir(args, assignment)
    problems = write_feedback_pages(results, title=assignment.config.title, folder=reports,
                                    notebook_html=not args.no_notebook_html)
    for problem in problems:
        print(f"warning: {for_terminal(problem)}", file=sys.stderr)
    write_summary(results, assignment=assignment.name, title=assignment.config.title,
                  folder=reports, pairs=similar_pairs(assignment, results, args.similar))
    console.print(f"wrote {len(results)} feedback pages and {reports / 'index.html'}")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    """Serve the staff review page on 127.0.0.1 until Ctrl-C."""
    assignment = assignment_of(args)
    _stored(args, assignment)  # a gradebook with results, its penalties and overrides restated
    reports = reports_dir(args, assignment)

    def summary(results: list[Result]) -> None:
        write_summary(results, assignment=assignment.name, title=assignment.config.title,
                      folder=reports, pairs=similar_pairs(assignment, results, similarity.CODE_THRESHOLD))

    page = review.Review(assignment=assignment, gradebook=Gradebook(args.gradebook), reports=reports,
                         reviewer=args.reviewer or _os_user(), on_change=summary)
    server = review.bind(page, args.port)
    print(f"reviewing {assignment.name} as {page.reviewer}: open {page.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("review stopped; every change is in the gradebook", flush=True)
    finally:
        server.server_close()
    return 0


def _os_user() -> str:
    """The name of the user running the grader, the default reviewer."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "staff"


def _port(text: str) -> int:
    """The value of --port: a whole number from 0 (any free port) to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 (any free port) to 65535; found {text!r}")
    return int(text)


def _stored(args: argparse.Namespace, assignment: Assignment) -> list[Result]:
    """Each student's latest result, its late penalty brought up to date with assignment.toml
    (and stored), so that a changed deadline or extension shows without a `grader run`."""
    path = args.gradebook
    if "://" not in path and not Path(path).exists():
        raise GraderError(f"no gradebook at {path}: run `grader run {assignment.name}` first "
                          "or pass --gradebook")
    gradebook = Gradebook(path)
    late.restate(gradebook, assignment)
    results = gradebook.latest(assignment.name)
    if not results:
        raise GraderError(f"the gradebook {path} holds no results for {assignment.name}: "
                          f"run `grader run {assignment.name} --submissions DIR` first")
    return results


EXPORT_COLUMNS = export.COLUMNS


def cmd_export(args: argparse.Namespace) -> int:
    """Print each student's latest grade as CSV or JSON, or as Moodle's or Canvas' grade import."""
    assignment = assignment_of(args)
    roster = read_roster(Path(args.roster)) if args.roster else None
    results = _stored(args, assignment)
    column = args.column or f"{assignment.config.title}"
    text = export.render(results, args.format, roster=roster, column=column)
    if roster is not None and args.format in export.LMS_FORMATS:
        left_out = export.not_on_roster(results, roster)
        if left_out:
            print(f"warning: {len(left_out)} graded student(s) are not on the roster and are left"
                  f" out of the {args.format} file: {for_terminal(', '.join(left_out[:10]))}"
                  f"{' …' if len(left_out) > 10 else ''}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check what grading needs on this machine, as seen from inside the sandbox."""
    rows = doctor.diagnose(course=args.course, data_home_dir=args.data_home, gradebook=args.gradebook,
                           gpus=args.gpus, per_gpu=devices.per_gpu(args.per_gpu))
    table = Table("check", "status", "detail", title="grader doctor")
    for row in rows:
        style = {"ok": "green", "warn": "yellow"}.get(row.status, "bold red")
        table.add_row(row.name, f"[{style}]{row.status}[/{style}]", row.detail)
    console.print(table)
    failed = [r.name for r in rows if r.status == "FAIL"]
    if failed:
        print(f"error: grading cannot work here: {', '.join(failed)} failed (see the table)",
              file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grader", description=(
        "Grade Jupyter notebooks of a deep-learning course: each submission runs in its own "
        "kernel, hidden pytest checks score it, a gradebook keeps the results."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
                assignment: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        options.common(p, assignment=assignment)
        p.set_defaults(handler=handler)
        return p

    command("list", cmd_list, "list the course's assignments", assignment=False)
    command("release", cmd_release, "write the starter notebook from the instructor notebook")
    p = command("bundle", cmd_bundle, "write the student bundle: a zip of the starter notebook, "
                "the student data, the public checks and a README (nothing hidden)")
    p.add_argument("--output", "-o", required=True, metavar="FILE.zip", help="the zip to write")
    p.add_argument("--data-home", help="dataset cache (default $GRADER_DATA_HOME or ~/.cache/grader)")
    p = sub.add_parser("check", help="students: run a notebook with the public checks only, offline",
                       description="Run NOTEBOOK in a fresh (sandboxed) kernel with the public "
                       "checks of the unzipped bundle it sits in; print each check, the public "
                       "total and the hidden points still to be earned. Writes no gradebook.")
    p.add_argument("notebook", metavar="NOTEBOOK", help="the notebook to check, e.g. assignment01.ipynb")
    p.add_argument("--assignment", metavar="DIR_OR_NAME",
                   help="the unzipped bundle folder (default: the notebook's folder, else here), "
                        "or an assignment of the course")
    options.common(p, assignment=False)
    options.gpu_options(p)
    p.add_argument("--data-home", help="dataset cache, for an assignment of the course")
    p.set_defaults(handler=cmd_check)
    p = command("validate", cmd_validate,
                "grade the reference and the starter: full marks and zero, or exit 1")
    # one after the other: the reference, which may train for minutes, gets every core's threads
    # instead of sharing them with a starter that is done in seconds
    options.grading_options(p, workers="1")
    p.add_argument("--reports", help="also write their feedback pages here")
    p = command("collect", cmd_collect, "collect each student's latest notebook from a Moodle or "
                "Canvas 'download all submissions' zip (or a folder) into DIR/STUDENT.ipynb")
    p.add_argument("source", metavar="ZIP_OR_DIR",
                   help="the LMS's zip of all submissions, or a folder of STUDENT.ipynb")
    p.add_argument("--output", "-o", required=True, metavar="DIR",
                   help="new or empty folder for STUDENT.ipynb and .collected.json (the times)")
    p.add_argument("--roster", help="roster CSV (student, name, lms_id, login, ...) that maps the "
                   "LMS's names and ids to student ids")
    text = "grade every notebook in a folder of submissions"
    p = sub.add_parser("run", help=text, description=text)
    options.run_options(p)  # declared with grader.cli.early, which reads them before this import
    p.set_defaults(handler=cmd_run)
    p = command("report", cmd_report, "write feedback pages and the class summary from the gradebook")
    p.add_argument("--gradebook", default="gradebook.sqlite", help=options.GRADEBOOK_HELP)
    p.add_argument("--reports", help="folder for the pages (default reports/ASSIGNMENT)")
    p.add_argument("--no-notebook-html", action="store_true",
                   help="do not write the executed notebooks as HTML")
    options.similar_option(p)
    p = command("review", cmd_review, "serve the staff review page on 127.0.0.1: adjust a check's "
                "points with a comment, grade the rubric's written answers; each change is kept")
    p.add_argument("--gradebook", default="gradebook.sqlite", help=options.GRADEBOOK_HELP)
    p.add_argument("--reports", help="folder of the student pages, written again after each change"
                                     " (default reports/ASSIGNMENT)")
    p.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (default 0: any free port)")
    p.add_argument("--reviewer", help="your name, kept with every change (default: the OS user)")
    p = command("export", cmd_export, "export each student's latest grade (raw score, late penalty"
                " and final score) as CSV or JSON, or as Moodle's or Canvas' grade import")
    p.add_argument("--format", choices=export.FORMATS, default="csv",
                   help="csv or json (every column), moodle (the assignment's offline grading "
                        "worksheet, by participant id) or canvas (the gradebook import CSV); "
                        "default csv")
    p.add_argument("--roster", help="roster CSV (student, name, email, lms_id, sis_id, login, "
                                    "section): needed by moodle and canvas")
    p.add_argument("--column", help="canvas: the assignment's column as Canvas' own export names "
                                    "it, e.g. 'Assignment 01 (12345)' (default: the title, which "
                                    "Canvas imports as a new assignment)")
    p.add_argument("--gradebook", default="gradebook.sqlite", help=options.GRADEBOOK_HELP)
    p.add_argument("--output", "-o", help="write to this file instead of standard output")
    p = command("feedback", cmd_feedback, "release feedback: zip each student's feedback page "
                "and executed notebook, one folder each, named for upload to the LMS")
    p.add_argument("--zip", required=True, metavar="OUT.zip", help="the zip to write")
    p.add_argument("--roster", help="roster CSV: folders named as Moodle's submissions "
                   "('Full Name_LMSID_assignsubmission_file_/'); without it, STUDENT/")
    p.add_argument("--gradebook", default="gradebook.sqlite", help=options.GRADEBOOK_HELP)
    p.add_argument("--reports", help="folder of the pages (default reports/ASSIGNMENT); missing "
                                     "pages are written first")
    p = command("doctor", cmd_doctor, "check bubblewrap, the kernel's Python and packages, "
                "TensorFlow's devices inside the sandbox, the data cache, the gradebook, Chromium",
                assignment=False)
    options.gpu_options(p)
    p.add_argument("--data-home", help="dataset cache (default $GRADER_DATA_HOME or ~/.cache/grader)")
    p.add_argument("--gradebook", default="gradebook.sqlite", help=options.GRADEBOOK_HELP)
    data_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user mistakes end in one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except GraderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ValidationFailed | PreflightFailed) else 2
    except KeyboardInterrupt:
        print("error: interrupted; results graded so far are in the gradebook", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
