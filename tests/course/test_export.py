"""Exports: csv and json with the raw score and the late penalty, Moodle's grading worksheet and
Canvas' gradebook import, from results built directly (no kernel)."""

import csv
import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from grader.cli.main import main
from grader.course.export import render
from grader.course.roster import RosterEntry
from grader.model.config import Deadline
from grader.model.errors import GraderError
from grader.model.late import LatePolicy, apply_late
from grader.model.result import Result
from grader.store.gradebook import Gradebook

REPO = Path(__file__).resolve().parents[2]
DUE = datetime.fromisoformat("2026-03-01T23:59:00+01:00")
EXPORTED = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ROSTER = [
    RosterEntry("zoe", "Zoé Ångström", "zoe@uni.example", "101", "S-1", "zoe1", "Lab A"),
    RosterEntry("bob", "=HYPERLINK(\"x\")", "bob@uni.example", "102", "S-2", "bob2", "Lab B"),
    RosterEntry("eve", "Eve Fault", "eve@uni.example", "103", "S-3", "eve3", "Lab A"),
    RosterEntry("nobody", "Never Handed In", "n@uni.example", "104", "S-4", "n4", "Lab B"),
]


def results() -> list[Result]:
    """zoe: 8 raw, one day late at 10% a day (7); bob: on time (5); eve: a grader fault; sam: off the roster."""
    made = []
    for student, score, status, late in [("zoe", 8.0, "graded", 3600), ("bob", 5.0, "cell_error", 0),
                                         ("eve", 0.0, "error", 0), ("sam", 9.0, "graded", 0)]:
        r = Result(student=student, assignment="tiny", notebook=f"{student}.ipynb", sha256="ab" * 32,
                   checks_sha256="k", status=status, reason="", score=score, max_score=10,
                   submitted_at=DUE + timedelta(seconds=late),
                   graded_at=datetime(2026, 3, 5, 9, 30, tzinfo=UTC))
        made.append(r)
    rule = LatePolicy(Deadline(due=DUE.isoformat(), rate=0.1))
    for r in made:
        apply_late(r, rule)
    return made


def test_moodle_is_the_assignments_grading_worksheet_with_the_final_grade():
    text = render(results(), "moodle", roster=ROSTER, exported_at=EXPORTED)
    lines = text.splitlines()
    assert lines[0] == ("Identifier,Full name,Email address,Status,Grade,Maximum Grade,"
                        "Grade can be changed,Last modified (submission),Last modified (grade),"
                        "Feedback comments")
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert [r[0] for r in rows] == ["Participant 101", "Participant 102", "Participant 103"]
    zoe, bob, eve = rows
    assert zoe[:9] == ["Participant 101", "Zoé Ångström", "zoe@uni.example", "Submitted for grading",
                       "7", "10", "Yes", "2026-03-01T23:59:00+00:00", "2026-03-10T12:00:00+00:00"]
    assert zoe[9].startswith("7/10 points (8 from the checks, less 1 for lateness: handed in 1 h after")
    assert bob[1] == "'=HYPERLINK(\"x\")" and bob[4] == "5" and bob[9] == "5/10 points"
    assert eve[4] == "", "a grader fault has no grade, never a zero"
    assert eve[9].startswith("not graded yet")


def test_canvas_is_the_gradebook_import_with_a_points_possible_row():
    text = render(results(), "canvas", roster=ROSTER, column="Assignment 01 (4711)")
    assert text.splitlines() == [
        "Student,ID,SIS User ID,SIS Login ID,Section,Assignment 01 (4711)",
        "    Points Possible,,,,,10",
        "Zoé Ångström,101,S-1,zoe1,Lab A,7",
        "\"'=HYPERLINK(\"\"x\"\")\",102,S-2,bob2,Lab B,5",
        "Eve Fault,103,S-3,eve3,Lab A,",
    ]


def test_lms_formats_need_a_roster_with_the_ids_the_lms_finds_students_by():
    with pytest.raises(GraderError, match="needs --roster"):
        render(results(), "moodle")
    no_ids = [RosterEntry("zoe", "Zoé")]
    with pytest.raises(GraderError, match="no lms_id .* for zoe"):
        render(results(), "moodle", roster=no_ids)
    with pytest.raises(GraderError, match="no lms_id, sis_id or login for zoe"):
        render(results(), "canvas", roster=no_ids, column="A (1)")


def test_csv_and_json_show_the_raw_score_the_penalty_and_the_final_score():
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO(render(results(), "csv")))}
    assert (rows["zoe"]["score"], rows["zoe"]["raw_score"], rows["zoe"]["late_penalty"]) == ("7.0", "8.0", "1.0")
    assert rows["zoe"]["late_seconds"] == "3600" and rows["zoe"]["due_at"] == DUE.isoformat()
    assert (rows["eve"]["score"], rows["eve"]["raw_score"], rows["eve"]["late_penalty"]) == ("", "", "")
    data = {r["student"]: r for r in json.loads(render(results(), "json"))}
    assert (data["zoe"]["score"], data["zoe"]["raw_score"], data["zoe"]["late_penalty"]) == (7.0, 8.0, 1.0)
    assert data["eve"]["score"] is None


def test_the_export_command_follows_the_current_deadline_and_warns_of_students_off_the_roster(
        tmp_path, capsys):
    course = tmp_path / "course"
    shutil.copytree(REPO / "tests" / "files" / "course", course)
    toml = course / "assignments" / "tiny" / "assignment.toml"
    plain = toml.read_text(encoding="utf-8")
    book = tmp_path / "book.sqlite"
    gradebook = Gradebook(book)
    for r in results():
        gradebook.store(r)
    (tmp_path / "roster.csv").write_text(
        "student,name,email,lms_id\nzoe,Zoé Ångström,zoe@uni.example,101\nbob,Bob,bob@uni.example,102\n",
        encoding="utf-8")
    args = ["export", "tiny", "--course", str(course), "--gradebook", str(book), "--format", "canvas",
            "--roster", str(tmp_path / "roster.csv"), "--column", "Tiny (9)"]
    assert main(args) == 0  # no [deadline] in tiny's toml: nothing is late
    out, err = capsys.readouterr()
    assert out.splitlines()[2:] == ["Zoé Ångström,101,,,,8", "Bob,102,,,,5"]
    assert err.startswith("warning: 2 graded student(s) are not on the roster") and "eve, sam" in err
    toml.write_text(plain + '\n[deadline]\ndue = "2026-03-01T23:59:00+01:00"\npenalty = "per_hour"\n'
                    'rate = 0.25\n', encoding="utf-8")
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[2] == "Zoé Ångström,101,,,,5.5"
    assert Gradebook(book).latest("tiny")[3].score == 5.5, "the new penalty is stored"
    assert main([*args[:6], "--format", "moodle"]) == 2
    assert "needs --roster" in capsys.readouterr().err


def test_a_missing_extensions_file_stops_the_export_with_one_line(tmp_path, capsys):
    course = tmp_path / "course"
    shutil.copytree(REPO / "tests" / "files" / "course", course)
    toml = course / "assignments" / "tiny" / "assignment.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + '\n[deadline]\ndue = "2026-03-01T23:59:00Z"\n'
                    'extensions = "extensions.csv"\n', encoding="utf-8")
    book = tmp_path / "book.sqlite"
    Gradebook(book).store(results()[0])
    assert main(["export", "tiny", "--course", str(course), "--gradebook", str(book)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the extensions file ") and "does not exist" in err
    assert err.count("\n") == 1


@pytest.mark.slow
def test_collected_lms_times_decide_the_penalty_that_the_lms_files_carry(course, tmp_path, capsys):
    import zipfile

    from tests.conftest import TINY_SOLUTION
    from tests.course.test_collect import add, nb_bytes

    toml = course / "assignments" / "tiny" / "assignment.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + '\n[deadline]\ndue = 2026-03-02T23:59:00+01:00\n'
                    'rate = 0.25\ncap = 0.5\n', encoding="utf-8")
    archive = tmp_path / "canvas.zip"
    with zipfile.ZipFile(archive, "w") as z:
        add(z, "smithjohn_201_9001_tiny.ipynb", nb_bytes(*TINY_SOLUTION), utc=datetime(2026, 3, 1, 9, tzinfo=UTC))
        add(z, "lópezana_LATE_202_9100_tiny.ipynb", nb_bytes(*TINY_SOLUTION),
            utc=datetime(2026, 3, 3, 1, 5, tzinfo=UTC))  # 2 h 6 min late: one started day
    roster = tmp_path / "roster.csv"
    roster.write_text("student,name,email,lms_id,login\njohn,\"Smith, John\",j@uni.example,201,smithjohn\n"
                      "ana,\"López, Ana\",a@uni.example,202,lópezana\n", encoding="utf-8")
    out, book = tmp_path / "collected", tmp_path / "book.sqlite"
    common = ["--course", str(course), "--gradebook", str(book)]
    assert main(["collect", "tiny", str(archive), "-o", str(out), "--roster", str(roster), "--course",
                 str(course)]) == 0
    assert main(["run", "tiny", "--submissions", str(out), "--reports", str(tmp_path / "reports"),
                 *common]) == 0
    capsys.readouterr()
    assert main(["export", "tiny", *common, "--format", "canvas", "--roster", str(roster),
                 "--column", "Tiny (77)"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Student,ID,SIS User ID,SIS Login ID,Section,Tiny (77)", "    Points Possible,,,,,6",
        '"Smith, John",201,,smithjohn,,6', '"López, Ana",202,,lópezana,,4.5']
    assert main(["export", "tiny", *common, "--format", "moodle", "--roster", str(roster)]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0][:5] == ["Identifier", "Full name", "Email address", "Status", "Grade"]
    assert [(r[0], r[4], r[7]) for r in rows[1:]] == [("Participant 201", "6", "2026-03-01T09:00:00+00:00"),
                                                      ("Participant 202", "4.5", "2026-03-03T01:05:00+00:00")]
    assert "6 from the checks, less 1.5 for lateness: handed in 2 h 6 min after" in rows[2][9]


@pytest.mark.slow
def test_moodle_and_canvas_archives_are_collected_graded_and_exported_with_their_penalties(
        course, tmp_path, capsys):
    """Issue 12's end to end: both LMSs' "download all submissions" archives (a late hand-in, a
    resubmission, a name with non-ASCII letters, a hostile member each) through collect, run and
    the exports each LMS imports."""
    import stat
    import unicodedata
    import zipfile

    from tests.conftest import TINY_SOLUTION
    from tests.course.test_collect import add, nb_bytes

    toml = course / "assignments" / "tiny" / "assignment.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + '\n[deadline]\ndue = 2026-03-02T23:59:00+01:00\n'
                    'rate = 0.25\ncap = 0.5\n', encoding="utf-8")
    full = nb_bytes(*TINY_SOLUTION)
    moodle, canvas = tmp_path / "moodle.zip", tmp_path / "canvas.zip"
    with zipfile.ZipFile(moodle, "w") as z:
        zoe = unicodedata.normalize("NFD", "Zoé Ångström")  # as a Mac names the folder
        add(z, f"{zoe}_301_assignsubmission_file_/tiny.ipynb", full, (2026, 3, 12, 10, 0, 0))  # days late
        add(z, "Bob Jones_302_assignsubmission_file_/tiny.ipynb", full, (2026, 3, 1, 8, 0, 0))
        add(z, "../evil.ipynb", full)
    with zipfile.ZipFile(canvas, "w") as z:
        add(z, "smithjohn_201_9001_tiny.ipynb", nb_bytes("total = 0"), utc=datetime(2026, 3, 1, 9, tzinfo=UTC))
        add(z, "smithjohn_201_9050_tiny-1.ipynb", full, utc=datetime(2026, 3, 1, 11, tzinfo=UTC))
        add(z, "lópezana_LATE_202_9100_tiny.ipynb", full, utc=datetime(2026, 3, 3, 1, 5, tzinfo=UTC))
        add(z, "mallory_203_9200_tiny.ipynb", b"/etc/passwd", mode=stat.S_IFLNK | 0o777)
    roster = tmp_path / "roster.csv"
    roster.write_text("student,name,email,lms_id,login\n"
                      "zoe,Zoé Ångström,z@uni.example,301,\nbob,Bob Jones,b@uni.example,302,\n"
                      "john,\"Smith, John\",j@uni.example,201,smithjohn\n"
                      "ana,\"López, Ana\",a@uni.example,202,lópezana\n", encoding="utf-8")
    book = tmp_path / "book.sqlite"
    common = ["--course", str(course), "--gradebook", str(book)]
    for archive in (moodle, canvas):
        out = tmp_path / archive.stem
        assert main(["collect", "tiny", str(archive), "-o", str(out), "--roster", str(roster),
                     "--course", str(course)]) == 0
        said = capsys.readouterr()
        assert "evil" in said.err + said.out if archive == moodle else "mallory" in said.err + said.out
        assert main(["run", "tiny", "--submissions", str(out), "--reports", str(tmp_path / "reports"),
                     *common]) == 0
    assert not (tmp_path / "evil.ipynb").exists() and not list(tmp_path.rglob("mallory*"))
    assert sorted(p.name for p in (tmp_path / "moodle").glob("*.ipynb")) == ["bob.ipynb", "zoe.ipynb"]
    assert sorted(p.name for p in (tmp_path / "canvas").glob("*.ipynb")) == ["ana.ipynb", "john.ipynb"]
    capsys.readouterr()
    assert main(["export", "tiny", *common, "--format", "moodle", "--roster", str(roster)]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                       "Grade can be changed", "Last modified (submission)", "Last modified (grade)",
                       "Feedback comments"]  # Moodle's grading worksheet, as Moodle writes it
    grades = {r[0]: r[4] for r in rows[1:]}
    # Zoé: days late, the cap (half the points); Ana: 2 h 6 min late, one started day (a quarter);
    # John: his resubmission (the full one) counts, on time
    assert grades == {"Participant 301": "3", "Participant 302": "6", "Participant 201": "6",
                      "Participant 202": "4.5"}
    assert main(["export", "tiny", *common, "--format", "canvas", "--roster", str(roster),
                 "--column", "Tiny (77)"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["Student,ID,SIS User ID,SIS Login ID,Section,Tiny (77)", "    Points Possible,,,,,6"]
    assert sorted(lines[2:]) == sorted(['Zoé Ångström,301,,,,3', 'Bob Jones,302,,,,6',
                                        '"Smith, John",201,,smithjohn,,6', '"López, Ana",202,,lópezana,,4.5'])


def test_the_feedback_zip_shows_the_current_run_and_slugs_every_student_folder(course, tmp_path, capsys):
    """A -> B -> A: alice's page on disk is B's (0/10), the gradebook's grade A's (10/10): the
    zip gets A's page, written again. Without a roster, an id that looks like a path is a
    folder of its slug in the zip, never '..'."""
    import zipfile

    from grader.reports.pages import write_feedback

    def made(student: str, sha: str, score: float) -> Result:
        return Result(student=student, assignment="tiny", notebook="n.ipynb", sha256=sha * 32,
                      checks_sha256="k", status="graded", reason="", score=score, max_score=10)

    book, reports = tmp_path / "g.sqlite", tmp_path / "reports"
    gradebook = Gradebook(book)
    evil = "x\\..\\..\\rt-evil"
    for result in (made("alice", "aa", 10), made("alice", "bb", 0), made(evil, "cc", 4)):
        gradebook.store(result)
        write_feedback(result, title="Tiny", folder=reports, notebook_html=False)
    gradebook.mark_seen("alice", "tiny", "aa" * 32, "k")  # A again: already graded, skipped
    assert main(["feedback", "tiny", "--course", str(course), "--gradebook", str(book),
                 "--reports", str(reports), "--zip", str(tmp_path / "out.zip")]) == 0
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        names = archive.namelist()
        alice = archive.read("alice/alice.html").decode()
    assert "10 / 10" in alice and "aa" * 8 in alice and "bb" * 8 not in alice
    assert all("\\" not in name and ".." not in name.split("/") for name in names), names
    assert len(names) == 2 and all(name.count("/") == 1 for name in names)
