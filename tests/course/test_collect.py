"""LMS intake: Moodle's and Canvas' "download all submissions" archives and plain folders."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import unicodedata
import zipfile
from datetime import UTC, datetime

import nbformat
import pytest

from grader.cli.main import main
from grader.course.collect import CollectError, Limits, Member, _bounded_read, collect
from grader.course.roster import RosterEntry
from grader.model.submission import discover
from grader.store.gradebook import Gradebook
from tests.conftest import TINY_SOLUTION, notebook

MB = 1_000_000


def nb_bytes(*sources: str) -> bytes:
    return nbformat.writes(notebook(*sources)).encode()


def local(*when: int) -> datetime:
    """A zip's date-time as collect reads it without a zone: this machine's local time."""
    return datetime(*when).astimezone()


def add(archive: zipfile.ZipFile, name: str, data: bytes, when: tuple[int, ...] = (2026, 3, 1, 9, 0, 0),
        *, utc: datetime | None = None, mode: int = stat.S_IFREG | 0o644) -> None:
    """Add NAME as the LMS writes it: a date-time, and (where UTC) the extended timestamp field."""
    info = zipfile.ZipInfo(name, date_time=when)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = mode << 16
    if utc is not None:
        info.extra = struct.pack("<HHBi", 0x5455, 5, 1, int(utc.timestamp()))
    archive.writestr(info, data)


NFD_ZOE = unicodedata.normalize("NFD", "Zoé Ångström")  # as a Mac names the file


@pytest.fixture
def moodle_zip(tmp_path):
    path = tmp_path / "moodle.zip"
    with zipfile.ZipFile(path, "w") as z:
        add(z, f"{NFD_ZOE}_101_assignsubmission_file_/tiny.ipynb", nb_bytes("zoe = 1"),
            (2026, 3, 1, 10, 30, 0))
        add(z, "Al Brown_102_assignsubmission_file_/tiny.ipynb", nb_bytes("al = 'tiny'"),
            (2026, 3, 1, 8, 0, 0))
        add(z, "Al Brown_102_assignsubmission_file_/scratch.ipynb", nb_bytes("al = 'scratch'"),
            (2026, 3, 1, 11, 0, 0))  # newer, but not the assignment's notebook
        add(z, "Al Brown_102_assignsubmission_onlinetext_/onlinetext.html", b"<p>see file</p>")
        add(z, "Cy Dee_103_assignsubmission_file_tiny.ipynb", nb_bytes("cy = 1"),  # flat layout
            (2026, 3, 2, 23, 59, 0))
        add(z, "../evil.ipynb", nb_bytes("evil = 1"))
    return path


@pytest.fixture
def canvas_zip(tmp_path):
    path = tmp_path / "canvas.zip"
    with zipfile.ZipFile(path, "w") as z:
        add(z, "smithjohn_201_9001_tiny.ipynb", nb_bytes("v = 0"), utc=datetime(2026, 3, 1, 9, tzinfo=UTC))
        add(z, "smithjohn_201_9077_tiny-2.ipynb", nb_bytes("v = 2"), utc=datetime(2026, 3, 1, 12, tzinfo=UTC))
        add(z, "smithjohn_201_9050_tiny-1.ipynb", nb_bytes("v = 1"), utc=datetime(2026, 3, 1, 11, tzinfo=UTC))
        add(z, "lópezana_LATE_202_9100_tiny.ipynb", nb_bytes("ana = 1"),
            utc=datetime(2026, 3, 3, 1, 5, tzinfo=UTC))
        add(z, "mallory_203_9200_tiny.ipynb", b"/etc/passwd", mode=stat.S_IFLNK | 0o777)
        add(z, "eve_204_9300_tiny.ipynb", b"\0" * (15 * MB))  # under the size limit; 1000 to 1
        add(z, "/etc/cron.d/tiny.ipynb", nb_bytes("x = 1"))
        add(z, "smithjohn_201_9002_notes.txt", b"my notes")
    return path


MOODLE_ROSTER = [RosterEntry("zoe", name="Zoé Ångström", lms_id="101"),
                 RosterEntry("al", name="Al Brown", lms_id="102"),
                 RosterEntry("cy", name="cy  dee"),  # no lms id: found by name
                 RosterEntry("dan", name="Dan Eyre", lms_id="104")]


def skipped(done, kind):
    return {s.path: s.why for s in done.skipped if s.kind == kind}


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_moodle_archive_maps_by_roster_keeps_the_notebook_and_refuses_traversal(tmp_path, moodle_zip):
    out = tmp_path / "work" / "collected"
    before = files_under(tmp_path)
    done = collect(moodle_zip, out, assignment="tiny", notebook_name="tiny.ipynb", roster=MOODLE_ROSTER)
    by = {c.student: c for c in done.collected}
    assert sorted(by) == ["al", "cy", "zoe"]
    assert (by["zoe"].name, by["zoe"].lms_id, by["zoe"].source) == ("Zoé Ångström", "101", "tiny.ipynb")
    assert by["cy"].source == "tiny.ipynb" and by["cy"].submitted_at == local(2026, 3, 2, 23, 59, 0)
    assert by["zoe"].submitted_at == local(2026, 3, 1, 10, 30, 0)
    assert not any(c.late for c in done.collected)  # Moodle's download has no late marker
    assert "al = 'tiny'" in (out / "al.ipynb").read_text()  # the assignment's notebook, not scratch
    assert skipped(done, "older") == {"Al Brown_102_assignsubmission_file_/scratch.ipynb":
                                      "al also handed in Al Brown_102_assignsubmission_file_/tiny.ipynb,"
                                      " kept as the latest"}
    assert "'..'" in skipped(done, "refused")["../evil.ipynb"]
    assert "onlinetext" in "".join(skipped(done, "ignored"))
    assert [e.student for e in done.missing] == ["dan"]
    assert files_under(out) == [".collected.json", "al.ipynb", "cy.ipynb", "zoe.ipynb"]
    assert files_under(tmp_path) == sorted(before + ["work", "work/collected"] +
                                           [f"work/collected/{f}" for f in files_under(out)])
    manifest = json.loads((out / ".collected.json").read_text())
    assert manifest == {"assignment": "tiny", "students": {
        "al": {"submitted_at": local(2026, 3, 1, 8, 0, 0).isoformat(), "source": "tiny.ipynb",
               "name": "Al Brown", "lms_id": "102", "late": False},
        "cy": {"submitted_at": local(2026, 3, 2, 23, 59, 0).isoformat(), "source": "tiny.ipynb",
               "name": "cy  dee", "lms_id": "103", "late": False},
        "zoe": {"submitted_at": local(2026, 3, 1, 10, 30, 0).isoformat(), "source": "tiny.ipynb",
                "name": "Zoé Ångström", "lms_id": "101", "late": False}}}
    found = discover(out, notebook_name="tiny.ipynb")
    assert [(s.student, s.submitted_at) for s in found] == [
        ("al", local(2026, 3, 1, 8, 0, 0)), ("cy", local(2026, 3, 2, 23, 59, 0)),
        ("zoe", local(2026, 3, 1, 10, 30, 0))]


def test_moodle_without_a_roster_uses_a_slug_of_the_name(tmp_path, moodle_zip):
    done = collect(moodle_zip, tmp_path / "out", assignment="tiny", notebook_name="tiny.ipynb")
    assert sorted(c.student for c in done.collected) == ["al_brown", "cy_dee", "zoe_angstrom"]
    zoe = next(c for c in done.collected if c.student == "zoe_angstrom")
    assert (zoe.name, zoe.lms_id) == (NFD_ZOE, "101")
    assert done.missing == []


def test_canvas_archive_keeps_the_highest_resubmission_marks_late_and_refuses_links_and_bombs(
        tmp_path, canvas_zip):
    out = tmp_path / "out"
    done = collect(canvas_zip, out, assignment="tiny", notebook_name="tiny.ipynb")
    by = {c.student: c for c in done.collected}
    assert sorted(by) == ["lopezana", "smithjohn"]  # Canvas' login, as a file-safe ASCII id
    john = by["smithjohn"]
    assert (john.source, john.lms_id, john.late) == ("tiny-2.ipynb", "201", False)
    assert john.submitted_at == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert "v = 2" in (out / "smithjohn.ipynb").read_text()
    assert set(skipped(done, "older")) == {"smithjohn_201_9001_tiny.ipynb", "smithjohn_201_9050_tiny-1.ipynb"}
    ana = by["lopezana"]
    assert (ana.late, ana.lms_id, ana.name) == (True, "202", "lópezana")
    assert ana.submitted_at == datetime(2026, 3, 3, 1, 5, tzinfo=UTC)
    refused = skipped(done, "refused")
    assert set(refused) == {"mallory_203_9200_tiny.ipynb", "eve_204_9300_tiny.ipynb", "/etc/cron.d/tiny.ipynb"}
    assert "symbolic link" in refused["mallory_203_9200_tiny.ipynb"]
    assert "zip bomb" in refused["eve_204_9300_tiny.ipynb"]
    assert "absolute path" in refused["/etc/cron.d/tiny.ipynb"]
    assert skipped(done, "ignored") == {"smithjohn_201_9002_notes.txt": "not a notebook (.ipynb)"}
    assert sorted(p.name for p in out.iterdir()) == sorted([".collected.json"] + [f"{s}.ipynb" for s in by])
    manifest = json.loads((out / ".collected.json").read_text())["students"]
    assert manifest["smithjohn"] == {"submitted_at": "2026-03-01T12:00:00+00:00", "source": "tiny-2.ipynb",
                                     "name": "smithjohn", "lms_id": "201", "late": False}
    times = {s.student: s.submitted_at for s in discover(out, notebook_name="tiny.ipynb")}
    assert times == {c.student: c.submitted_at for c in done.collected}


def test_canvas_with_a_roster_maps_by_user_id_or_login_and_reports_the_unknown(tmp_path, canvas_zip):
    roster = [RosterEntry("john", name="John Smith", login="smithjohn"),
              RosterEntry("ana", name="Ana López", lms_id="202")]
    extra = tmp_path / "more.zip"
    with zipfile.ZipFile(canvas_zip) as src, zipfile.ZipFile(extra, "w") as z:
        for info in src.infolist():
            z.writestr(info, src.read(info) if not info.filename.startswith("eve") else b"")
        add(z, "strangerx_299_9400_tiny.ipynb", nb_bytes("x = 1"))
    done = collect(extra, tmp_path / "out", assignment="tiny", notebook_name="tiny.ipynb", roster=roster)
    by = {c.student: c for c in done.collected}
    assert sorted(by) == ["ana", "john"]
    assert (by["ana"].name, by["ana"].late, by["john"].source) == ("Ana López", True, "tiny-2.ipynb")
    assert "no roster entry with lms_id '299' or login 'strangerx'" in skipped(done, "unmapped")[
        "strangerx_299_9400_tiny.ipynb"]
    assert done.missing == []


def test_without_a_roster_namesakes_and_blind_marking_are_told_apart_by_lms_id(tmp_path):
    archive = tmp_path / "blind.zip"
    with zipfile.ZipFile(archive, "w") as z:
        add(z, "Participant_5001_assignsubmission_file_/tiny.ipynb", nb_bytes("p = 1"))
        add(z, "Participant_5002_assignsubmission_file_/tiny.ipynb", nb_bytes("p = 2"))
        add(z, "Al Brown_102_assignsubmission_file_/tiny.ipynb", nb_bytes("a = 1"))
    done = collect(archive, tmp_path / "out", assignment="tiny", notebook_name="tiny.ipynb")
    assert sorted(c.student for c in done.collected) == ["al_brown", "participant_5001", "participant_5002"]
    assert "p = 2" in (tmp_path / "out" / "participant_5002.ipynb").read_text()
    assert not skipped(done, "older")


def test_a_moodle_file_named_like_another_students_prefix_stays_its_uploaders(tmp_path):
    """Moodle's flat layout glues the prefix to the name the student chose: Bob's file named
    'Alice Smith_111_assignsubmission_file_tiny.ipynb' is Bob's, read up to the first prefix."""
    archive = tmp_path / "moodle.zip"
    with zipfile.ZipFile(archive, "w") as z:
        add(z, "Alice Smith_111_assignsubmission_file_tiny.ipynb", nb_bytes("alice = 1"),
            (2026, 3, 1, 9, 0, 0))
        add(z, "Bob Jones_222_assignsubmission_file_Alice Smith_111_assignsubmission_file_tiny.ipynb",
            nb_bytes("bob = 1"), (2026, 3, 1, 10, 0, 0))  # later: the greedy pattern kept it as Alice's
        add(z, "Bob Jones_222_assignsubmission_file_x_333_assignfeedback_file_tiny.ipynb",
            nb_bytes("bob = 2"), (2026, 3, 1, 8, 0, 0))  # a submission, whatever its name says
    roster = [RosterEntry("alice", name="Alice Smith", lms_id="111"),
              RosterEntry("bob", name="Bob Jones", lms_id="222")]
    for given in (roster, None):
        out = tmp_path / f"out-{bool(given)}"
        done = collect(archive, out, assignment="tiny", notebook_name="tiny.ipynb", roster=given)
        alice, bob = ("alice", "bob") if given else ("alice_smith", "bob_jones")
        assert sorted(c.student for c in done.collected) == [alice, bob]
        assert "alice = 1" in (out / f"{alice}.ipynb").read_text()
        assert "bob = 1" in (out / f"{bob}.ipynb").read_text()
        assert list(skipped(done, "older")) == [
            "Bob Jones_222_assignsubmission_file_x_333_assignfeedback_file_tiny.ipynb"]


def test_a_member_larger_than_its_header_says_is_refused(tmp_path):
    """A header that lies about the unpacked size: the read stops at the declared size, and the
    member is refused, never written."""
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w") as z:
        add(z, "liar_205_9500_tiny.ipynb", b"a" * (3 * MB))
        add(z, "smithjohn_201_9001_tiny.ipynb", nb_bytes("v = 0"))
    data = bytearray(archive.read_bytes())
    local_header, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local_header + 22, 1000)  # uncompressed size: 1000, not 3 MB
    struct.pack_into("<I", data, central + 24, 1000)
    archive.write_bytes(bytes(data))
    done = collect(archive, tmp_path / "out", assignment="tiny", notebook_name="tiny.ipynb")
    assert [c.student for c in done.collected] == ["smithjohn"]
    why = skipped(done, "refused")["liar_205_9500_tiny.ipynb"]  # zipfile's CRC check or our cap
    assert "holds more than its header says" in why or "Bad CRC-32" in why
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".collected.json", "smithjohn.ipynb"]


def test_a_plain_folder_takes_file_times_and_refuses_links(tmp_path, write_notebook):
    subs = tmp_path / "subs"
    write_notebook(subs, "alice", "a = 1")
    write_notebook(subs / "bob", "work", "b = 1")
    outside = write_notebook(tmp_path / "elsewhere", "secret", "s = 1")
    (subs / "carol.ipynb").symlink_to(outside)
    (subs / "readme.md").write_text("hello")
    os.utime(subs / "alice.ipynb", (1_780_000_000, 1_780_000_000))
    done = collect(subs, tmp_path / "out", assignment="tiny", notebook_name="tiny.ipynb")
    assert [(c.student, c.source) for c in done.collected] == [("alice", "alice.ipynb"), ("bob", "work.ipynb")]
    assert done.collected[0].submitted_at == datetime.fromtimestamp(1_780_000_000, UTC)
    assert "symbolic link" in skipped(done, "refused")["carol.ipynb"]
    assert "readme.md" in skipped(done, "ignored")
    assert not (tmp_path / "out" / "carol.ipynb").exists()


def test_bounded_reads_never_trust_the_declared_size(tmp_path):
    lying = Member("x_1_2_tiny.ipynb", size=10, compressed=10, time=datetime.now(UTC),
                   open=lambda: io.BytesIO(b"{" * 1000))
    notes: list = []
    assert _bounded_read(lying, Limits(), [10**9], notes) is None
    assert "holds more than its header says" in notes[0].why
    honest = Member("y.ipynb", size=4, compressed=4, time=datetime.now(UTC), open=lambda: io.BytesIO(b"abcd"))
    assert _bounded_read(honest, Limits(), [10**9], notes) == b"abcd"


@pytest.mark.parametrize(("limits", "words"), [
    (Limits(members=3), "canvas.zip has 8 members, more than 3: no LMS download is that large"),
    (Limits(total_bytes=5 * MB), "canvas.zip would unpack to 15 MB, more than 5 MB (a zip bomb?)"),
])
def test_bomb_like_archives_are_refused_whole(tmp_path, canvas_zip, limits, words):
    with pytest.raises(CollectError, match=re.escape(words)):
        collect(canvas_zip, tmp_path / "out", assignment="tiny", notebook_name="tiny.ipynb", limits=limits)
    assert not (tmp_path / "out").exists()


def test_the_output_folder_is_new_empty_or_an_earlier_collection(tmp_path, canvas_zip, moodle_zip):
    out = tmp_path / "out"
    collect(canvas_zip, out, assignment="tiny", notebook_name="tiny.ipynb")
    again = collect(moodle_zip, out, assignment="tiny", notebook_name="tiny.ipynb")  # replaces the earlier one
    assert sorted(p.name for p in out.iterdir()) == [".collected.json", "al_brown.ipynb", "cy_dee.ipynb",
                                                     "zoe_angstrom.ipynb"]
    assert len(again.collected) == 3
    (out / "mine.ipynb").write_text("{}")
    with pytest.raises(CollectError, match="did not write"):
        collect(canvas_zip, out, assignment="tiny", notebook_name="tiny.ipynb")
    (tmp_path / "not-a-zip.zip").write_text("hello")
    with pytest.raises(CollectError, match="is not a zip archive"):
        collect(tmp_path / "not-a-zip.zip", tmp_path / "o2", assignment="tiny", notebook_name="tiny.ipynb")


def test_a_folder_holding_another_assignments_collection_is_refused_and_kept(tmp_path, canvas_zip, moodle_zip):
    out = tmp_path / "subs01"
    collect(moodle_zip, out, assignment="assignment01", notebook_name="tiny.ipynb")
    assert json.loads((out / ".collected.json").read_text())["assignment"] == "assignment01"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(CollectError, match="-o .*subs01 holds the collection of assignment01, not of"
                                           " assignment03: collect assignment03 into its own folder"):
        collect(canvas_zip, out, assignment="assignment03", notebook_name="tiny.ipynb")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    manifest = json.loads(before[".collected.json"])
    (out / ".collected.json").write_text(json.dumps({"students": manifest["students"]}))  # an older collect's
    with pytest.raises(CollectError, match="holds a collection that names no assignment"):
        collect(canvas_zip, out, assignment="assignment01", notebook_name="tiny.ipynb")
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_cli_collect_shows_no_control_characters_of_the_archives_names(course, tmp_path, capsys):
    archive = tmp_path / "moodle.zip"
    with zipfile.ZipFile(archive, "w") as z:
        add(z, "Eve\u202eevil_105_assignsubmission_file_/tiny.ipynb", nb_bytes("eve = 1"))
        add(z, "x\x1b]0;owned\x07\x1b[2J.ipynb", nb_bytes("x = 1"))
    out = tmp_path / "collected"
    assert main(["collect", "tiny", str(archive), "-o", str(out), "--course", str(course)]) == 0
    printed = capsys.readouterr()
    assert not any(c in printed.out + printed.err for c in "\x1b\x07\u202e")
    assert "warning: refused: x?]0;owned??[2J.ipynb: a path with control characters" in printed.err
    assert "Eve?evil" in printed.out
    shutil.copytree(course / "assignments" / "tiny", course / "assignments" / "other")
    assert main(["collect", "other", str(archive), "-o", str(out), "--course", str(course)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the collection of tiny, not of other" in err


def test_cli_collect_prints_the_mapping_and_warns_of_refused_unmapped_and_missing(
        course, tmp_path, moodle_zip, capsys):
    roster = tmp_path / "roster.csv"
    roster.write_text("student,name,lms_id\nzoe,Zoé Ångström,101\nal,Al Brown,102\ndan,Dan Eyre,104\n",
                      encoding="utf-8")
    out = tmp_path / "collected"
    assert main(["collect", "tiny", str(moodle_zip), "-o", str(out), "--roster", str(roster),
                 "--course", str(course)]) == 0
    printed = capsys.readouterr()
    assert "2 collected; grade them with `grader run tiny --submissions" in printed.out
    assert "Al Brown" in printed.out and "zoe" in printed.out
    warnings = printed.err.splitlines()
    assert ("warning: refused: ../evil.ipynb: a path with '..' (refused: it would be written outside"
            " the target)") in warnings
    assert any(w.startswith("warning: unmapped: Cy Dee_103_assignsubmission_file_tiny.ipynb: no roster entry with"
                            " lms_id '103' or name 'Cy Dee'") for w in warnings)
    assert "warning: no hand-in from dan (Dan Eyre) of the roster" in warnings
    assert sorted(p.name for p in out.iterdir()) == [".collected.json", "al.ipynb", "zoe.ipynb"]


def test_cli_collect_mistakes_are_one_line_exit_2(course, tmp_path, capsys):
    assert main(["collect", "tiny", str(tmp_path / "missing.zip"), "-o", str(tmp_path / "o"),
                 "--course", str(course)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.zip does not exist" in err
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    assert main(["collect", "tiny", str(empty), "-o", str(tmp_path / "o"), "--course", str(course)]) == 2
    assert "error: no notebook could be collected" in capsys.readouterr().err


@pytest.mark.slow
def test_grader_run_stores_the_collected_time(course, tmp_path):
    archive = tmp_path / "canvas.zip"
    with zipfile.ZipFile(archive, "w") as z:
        add(z, "smithjohn_LATE_201_9001_tiny.ipynb", nb_bytes(*TINY_SOLUTION),
            utc=datetime(2026, 3, 4, 17, 30, tzinfo=UTC))
    out = tmp_path / "collected"
    assert main(["collect", "tiny", str(archive), "-o", str(out), "--course", str(course)]) == 0
    book = tmp_path / "book.sqlite"
    run = subprocess.run([sys.executable, "-m", "grader", "run", "tiny", "--submissions", str(out),
                          "--course", str(course), "--gradebook", str(book), "--reports",
                          str(tmp_path / "reports")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    [result] = Gradebook(str(book)).latest("tiny")
    stored = result.submitted_at
    assert stored is not None
    assert (result.student, result.score) == ("smithjohn", 6.0)
    assert (stored if stored.tzinfo else stored.replace(tzinfo=UTC)) == datetime(2026, 3, 4, 17, 30, tzinfo=UTC)
