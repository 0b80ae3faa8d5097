import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from grader.model.errors import GradebookError
from grader.model.outcomes import Attachment, CheckOutcome
from grader.model.result import Result
from grader.store import migrations
from grader.store.gradebook import Gradebook
from grader.store.tables import Base
from tests.conftest import before_migrations


def result(student: str, sha: str, score: float, status: str = "graded") -> Result:
    return Result(
        student=student, assignment="a1", notebook=f"/s/{student}.ipynb", sha256=sha,
        checks_sha256="c1", status=status, reason="", score=score, max_score=10,
        checks=[CheckOutcome("test_x", "x works", True, 10, score, "partial", "half",
                             [Attachment("text", "t", "body")])],
        failed_cell={"index": 1, "source": "1/0", "ename": "ZeroDivisionError", "evalue": "",
                     "traceback": ""},
        submitted_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_store_and_read_back_the_latest_run(gradebook_target):
    book = Gradebook(gradebook_target)
    book.store(result("bob", "s1", 3))
    book.store(result("alice", "s2", 7))
    book.store(result("bob", "s3", 9))
    latest = book.latest("a1")
    assert [(r.student, r.score, r.sha256) for r in latest] == [("alice", 7, "s2"), ("bob", 9, "s3")]
    check = latest[1].checks[0]
    assert (check.description, check.points, check.attachments[0].content) == ("x works", 9, "body")
    assert latest[1].failed_cell["ename"] == "ZeroDivisionError"
    assert latest[1].graded_at.tzinfo is not None
    assert book.count_runs("a1") == {"alice": 1, "bob": 2}
    assert book.latest("other") == []


def test_already_graded_needs_the_same_notebook_and_checks(gradebook_target):
    book = Gradebook(gradebook_target)
    book.store(result("bob", "s1", 3))
    book.store(result("eve", "s9", 0, status="error"))
    assert book.already_graded("bob", "a1", "s1", "c1")
    assert not book.already_graded("bob", "a1", "s2", "c1")
    assert not book.already_graded("bob", "a1", "s1", "c2")
    assert not book.already_graded("bob", "a2", "s1", "c1")
    assert not book.already_graded("eve", "a1", "s9", "c1"), "grader failures are retried"


def test_results_survive_reopening(gradebook_target):
    Gradebook(gradebook_target).store(result("bob", "s1", 3))
    again = (gradebook_target.replace("postgresql://", "postgresql+psycopg://") if "://" in gradebook_target
             else f"sqlite:///{gradebook_target}")  # the same gradebook, its URL spelt out
    assert Gradebook(again).latest("a1")[0].score == 3


def test_a_bad_gradebook_is_a_user_error(tmp_path):
    (tmp_path / "g.sqlite").write_text("this is not a database" * 100)
    with pytest.raises(GradebookError, match="cannot open the gradebook"):
        Gradebook(tmp_path / "g.sqlite")


def test_a_resubmitted_older_notebook_shows_its_own_grade(gradebook_target):
    book = Gradebook(gradebook_target)
    book.store(result("bob", "v1", 3))
    book.store(result("bob", "v2", 9))
    assert book.latest("a1")[0].score == 9
    book.mark_seen("bob", "a1", "v1", "c1")  # bob hands in v1 again: already graded, so skipped
    assert [(r.sha256, r.score) for r in book.latest("a1")] == [("v1", 3)]


def keyed(student: str, sha: str, score: float, key: str, status: str = "graded") -> Result:
    stored = result(student, sha, score, status)
    stored.checks_sha256 = key
    return stored


def test_the_result_is_the_current_notebooks_under_the_key_it_was_last_found_with(gradebook_target):
    """A check breaks (key k2: a fault) and is put back as it was (key k1 again): the skipped
    rerun marks the notebook seen under k1, and its result is k1's grade, not the fault."""
    book = Gradebook(gradebook_target)
    book.store(keyed("bob", "v1", 10, "k1"))
    book.store(keyed("bob", "v1", 0, "k2", status="error"))
    assert [(r.status, r.checks_sha256) for r in book.latest("a1")] == [("error", "k2")]
    book.mark_seen("bob", "a1", "v1", "k1")
    assert [(r.status, r.score, r.checks_sha256) for r in book.latest("a1")] == [("graded", 10, "k1")]
    book.store(keyed("bob", "v1", 6, "k3"))  # the checks changed for good: their grade
    book.mark_seen("bob", "a1", "v1", "k1")  # and back again
    assert [r.score for r in book.latest("a1")] == [10]


def test_a_fault_is_never_the_result_while_a_good_run_under_the_same_key_exists(gradebook_target):
    book = Gradebook(gradebook_target)
    book.store(keyed("bob", "v1", 7, "k1"))
    book.store(keyed("bob", "v1", 0, "k1", status="error"))  # e.g. --force on a broken machine
    assert [(r.status, r.score) for r in book.latest("a1")] == [("graded", 7)]
    book.store(keyed("bob", "v1", 0, "k2", status="error"))  # a new key: its fault is the result
    assert [r.status for r in book.latest("a1")] == ["error"]


def test_student_text_with_lone_surrogates_and_nuls_is_stored(gradebook_target):
    book = Gradebook(gradebook_target)
    bad = result("eve\ud800", "s1", 0, status="cell_error")
    bad.reason = "cell 2 raised ValueError: \ud800\udfff broken\x00text"
    bad.checks[0].message = "found \udcff"
    bad.failed_cell = {"index": 1, "source": "x = '\ud800'", "ename": "E", "evalue": "\ud800",
                       "traceback": ""}
    book.store(bad)
    stored = book.latest("a1")[0]
    assert stored.reason.startswith("cell 2 raised ValueError") and "\x00" not in stored.reason
    assert "\ud800" not in stored.student and stored.student.startswith("eve")
    assert stored.checks[0].message.startswith("found")


def test_a_locked_write_is_retried(gradebook_target, monkeypatch):
    from sqlalchemy.exc import OperationalError

    book = Gradebook(gradebook_target, attempts=3)
    real, calls = book._store, []

    def flaky(r):
        calls.append(r.student)
        if len(calls) < 3:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        real(r)

    monkeypatch.setattr(book, "_store", flaky)
    book.store(result("bob", "s1", 3))
    assert len(calls) == 3 and book.latest("a1")[0].score == 3


def test_a_write_that_keeps_failing_is_one_gradebook_error(gradebook_target, monkeypatch):
    from sqlalchemy.exc import OperationalError

    book = Gradebook(gradebook_target, attempts=2)

    def broken(r):
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(book, "_store", broken)
    with pytest.raises(GradebookError, match="failed 2 times: .*disk I/O error"):
        book.store(result("bob", "s1", 3))


def test_a_gradebook_of_an_older_grader_gets_the_new_columns(tmp_path):
    path = tmp_path / "g.sqlite"
    Gradebook(path).store(result("bob", "s1", 3))
    with sqlite3.connect(path) as db:  # what an earlier release made: none of the new columns
        before_migrations(db)
        db.execute("ALTER TABLE grading_runs DROP COLUMN staff_detail")
        db.execute("ALTER TABLE submissions DROP COLUMN seen_at")
        db.execute("ALTER TABLE check_results DROP COLUMN fault")
        db.execute("ALTER TABLE grading_runs DROP COLUMN warmup_s")
    book = Gradebook(path)
    later = result("bob", "s2", 5, status="error")
    later.staff_detail = "kernel log"
    book.store(later)
    assert [(r.score, r.staff_detail) for r in book.latest("a1")] == [(5, "kernel log")]


def test_an_older_gradebooks_runs_read_back_with_zero_for_a_new_phase(tmp_path):
    path = tmp_path / "g.sqlite"
    Gradebook(path).store(result("bob", "s1", 3))
    with sqlite3.connect(path) as db:
        before_migrations(db)
        db.execute("ALTER TABLE grading_runs DROP COLUMN queue_s")
    [old] = Gradebook(path).latest("a1")
    assert old.queue_s == 0.0 and old.total_s >= 0


def test_the_store_and_report_phases_are_recorded_on_the_stored_run(gradebook_target):
    book = Gradebook(gradebook_target)
    first = book.store(result("bob", "s1", 3))
    second = book.store(result("alice", "s2", 7))
    book.record_phases(first, store_s=0.25, report_s=1.5)
    stored = {r.student: r for r in book.latest("a1")}
    assert (stored["bob"].store_s, stored["bob"].report_s) == (0.25, 1.5)
    assert (stored["alice"].store_s, stored["alice"].report_s) == (0.0, 0.0)
    assert first != second


# Migrations: the schema is Alembic's, and a gradebook of an earlier release survives the upgrade.

GRADEBOOKS = Path(__file__).resolve().parents[1] / "files" / "gradebooks"


def _schema_drift(book: Gradebook) -> list:
    """What differs between the gradebook's tables and the models of grader/gradebook.py."""
    with book.engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def test_a_new_gradebook_is_made_by_the_migrations_as_the_models_say(gradebook_target):
    book = Gradebook(gradebook_target)
    assert book.revision == migrations.head() != migrations.RELEASE1
    assert _schema_drift(book) == []
    assert Gradebook(gradebook_target).revision == migrations.head()  # opened again: unchanged


def test_the_grader_s_head_revision_is_alembic_s_and_its_revision_is_read_as_alembic_reads_it(
        gradebook_target):
    # migrations.HEAD spares every command Alembic's import; a new script must move it
    assert migrations.head() == migrations.HEAD == migrations.script_head()
    book = Gradebook(gradebook_target)
    with book.engine.connect() as connection:
        assert migrations.current(connection) == MigrationContext.configure(
            connection).get_current_revision() == migrations.HEAD


def test_opening_a_gradebook_at_the_newest_revision_imports_no_alembic(tmp_path):
    Gradebook(tmp_path / "g.sqlite")  # made (and migrated) here, opened in a fresh interpreter
    code = ("import sys; from grader.store.gradebook import Gradebook; Gradebook(sys.argv[1]);"
            " print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "g.sqlite")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("made_by", ["release", "older"])
def test_a_gradebook_of_an_earlier_release_opens_at_the_newest_revision_with_its_rows(tmp_path, made_by):
    # release.sql: what the grader before migrations made; older.sql: an older one still, without
    # the phase, weight and late columns and the overrides table (tests/files/gradebooks)
    path = tmp_path / "g.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript((GRADEBOOKS / f"{made_by}.sql").read_text())
    book = Gradebook(path)
    assert book.revision == migrations.head()
    assert _schema_drift(book) == []
    stored = {r.student: r for r in book.latest("a1")}
    assert {name: (r.score, r.status, r.sha256[0]) for name, r in stored.items()} == {
        "ann": (7, "graded", "a"), "bob": (9, "graded", "c"), "eve": (0, "error", "e")}
    assert [(c.name, c.points, c.message) for c in stored["ann"].checks] == [
        ("test_shape", 4, "ok"), ("test_accuracy", 3, "accuracy 0.85 is below 0.9")]
    assert stored["ann"].checks[0].attachments[0].content == "(3, 4)"
    assert stored["bob"].submitted_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert (stored["bob"].queue_s, stored["bob"].late_penalty, stored["bob"].late_note) == (0, 0, "")
    assert book.count_runs("a1") == {"ann": 1, "bob": 2, "eve": 1}
    assert book.already_graded("ann", "a1", "a" * 64, "key1")
    assert not book.already_graded("eve", "a1", "e" * 64, "key1"), "a grader fault is regraded"
    overrides = book.overrides("a1")
    if made_by == "release":
        assert [(o.item, o.points, o.was, o.reviewer) for o in overrides["ann"]] == [
            ("test_accuracy", 5, 3, "ta")]
    else:
        assert overrides == {}
    book.store(result("eve", "e" * 64, 8))
    assert {r.student: r.score for r in Gradebook(path).latest("a1")}["eve"] == 8


def test_a_gradebook_made_before_migrations_is_completed_on_either_database(gradebook_target):
    from sqlalchemy import create_engine

    from grader.store.gradebook import _url
    from grader.store.migrations import release1

    engine = create_engine(_url(gradebook_target))
    release1.metadata.create_all(engine)  # what the last release's create_all made, on this database
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE grading_runs DROP COLUMN late_note"))
        connection.execute(text("DROP TABLE overrides"))
        connection.execute(text("INSERT INTO students (id, name) VALUES (1, 'old')"))
    engine.dispose()
    book = Gradebook(gradebook_target)
    assert book.revision == migrations.head() and _schema_drift(book) == []
    book.store(result("old", "s1", 4))
    with book.engine.connect() as connection:
        assert connection.execute(text("SELECT id FROM students WHERE name = 'old'")).scalar() == 1
    assert [(r.student, r.score, r.late_note) for r in book.latest("a1")] == [("old", 4, "")]


def test_a_gradebook_of_a_newer_grader_is_one_line_error(gradebook_target):
    book = Gradebook(gradebook_target)
    book.store(result("bob", "s1", 3))
    with book.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(GradebookError) as error:
        Gradebook(gradebook_target)
    message = str(error.value)
    assert "schema revision 9999" in message and "upgrade the grader" in message
    assert "\n" not in message


def test_the_cli_says_a_newer_gradebook_needs_a_newer_grader(course, tmp_path, capsys):
    from grader.cli.main import main

    path = tmp_path / "g.sqlite"
    Gradebook(path).store(result("bob", "s1", 3))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = 'f00d'")
    assert main(["export", "tiny", "--gradebook", str(path), "--course", str(course)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open the gradebook") and err.count("\n") == 1
    assert "upgrade the grader" in err


# PostgreSQL: opening errors, lost connections.

def test_an_unreachable_server_is_one_line_error_that_says_what_to_check():
    with pytest.raises(GradebookError) as error:
        Gradebook("postgresql://u:secret@127.0.0.1:1/gradebook", attempts=1)
    message = str(error.value)
    assert "check that the database server runs" in message and "secret" not in message
    assert "127.0.0.1" in message and "\n" not in message


def test_a_dropped_connection_does_not_lose_the_next_write(postgres_url):
    import psycopg

    book = Gradebook(postgres_url)
    book.store(result("bob", "s1", 3))
    database = postgres_url.split("/")[3].split("?")[0]
    with psycopg.connect(postgres_url.replace(f"/{database}?", "/postgres?"), autocommit=True) as admin:
        ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchone()
    assert ended is not None and ended[0] >= 1  # the gradebook's pooled connection is gone
    book.store(result("alice", "s2", 7))
    assert [r.student for r in book.latest("a1")] == ["alice", "bob"]


# Claims: one grader at a time grades a submission.

def test_a_claim_is_held_until_the_result_is_stored(gradebook_target):
    book, other = Gradebook(gradebook_target), Gradebook(gradebook_target)
    assert book.claim("bob", "a1", "s1", "c1", lease_s=600)
    assert not other.claim("bob", "a1", "s1", "c1", lease_s=600), "held by a grader at work"
    assert other.claim("bob", "a1", "s1", "c2", lease_s=600), "another grading key is another claim"
    assert book.claims("a1") == {"bob": book.owner}
    book.store(result("bob", "s1", 3))  # checks_sha256 c1
    assert book.claims("a1") == {}
    assert other.claim("bob", "a1", "s1", "c1", lease_s=600)
    other.release("a1", "bob")
    assert book.claims("a1") == {}


def test_a_claim_left_by_a_killed_grader_is_taken_over(gradebook_target):
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from grader.store.gradebook import Gradebook\n"
        "book = Gradebook(sys.argv[1])\n"
        "assert book.claim('bob', 'a1', 's1', 'c1', lease_s=3600)\n"
        "print(book.owner, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"), gradebook_target], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    book = Gradebook(gradebook_target)
    assert book.claims("a1") == {"bob": killed.stdout.strip()} != {"bob": book.owner}
    assert book.claim("bob", "a1", "s1", "c1", lease_s=3600), "its grader is gone: taken over"
    assert book.claims("a1") == {"bob": book.owner}


def test_a_claim_of_another_machine_is_taken_over_only_once_its_lease_ran_out(gradebook_target):
    away = Gradebook(gradebook_target)
    away.owner = "grading-server-2:4242"  # a grader of another host: its process cannot be seen
    assert away.claim("bob", "a1", "s1", "c1", lease_s=3600)
    assert away.claim("ann", "a1", "s2", "c1", lease_s=0.2)
    time.sleep(0.3)
    book = Gradebook(gradebook_target)
    assert not book.claim("bob", "a1", "s1", "c1", lease_s=3600)
    assert book.claim("ann", "a1", "s2", "c1", lease_s=3600)
    assert book.claims("a1") == {"bob": "grading-server-2:4242", "ann": book.owner}


def _race(target: str, claim, graders: int = 8) -> list[bool]:
    """What CLAIM(gradebook) gives in each of GRADERS threads, each with a gradebook (and a
    connection pool) of its own, started at once."""
    books = [Gradebook(target) for _ in range(graders)]
    start = threading.Barrier(graders)

    def one(book: Gradebook) -> bool:
        start.wait()
        return claim(book)

    with ThreadPoolExecutor(graders) as pool:
        return list(pool.map(one, books))


def test_of_graders_claiming_one_submission_at_once_exactly_one_wins(gradebook_target):
    won = _race(gradebook_target, lambda book: book.claim("bob", "a1", "s1", "c1", lease_s=600))
    assert sorted(won) == [False] * 7 + [True]
    away = Gradebook(gradebook_target)
    away.owner = "grading-server-2:4242"
    assert away.claim("ann", "a1", "s2", "c1", lease_s=0)  # left over at once
    won = _race(gradebook_target, lambda book: book.claim("ann", "a1", "s2", "c1", lease_s=600))
    assert sorted(won) == [False] * 7 + [True], "one grader takes a left-over claim over"
    assert Gradebook(gradebook_target).claims("a1")["ann"] != "grading-server-2:4242"


@pytest.mark.parametrize("code", ["40001", "40P01"])  # serialization failure, deadlock
def test_a_postgresql_write_that_loses_a_conflict_is_retried(postgres_url, monkeypatch, code):
    book = Gradebook(postgres_url, attempts=3)
    real, calls = book._store, []

    def conflicting(r):  # the server itself raises the conflict, twice
        calls.append(r.student)
        if len(calls) < 3:
            with book.session() as session:
                session.execute(text(f"DO $$ BEGIN RAISE EXCEPTION 'lost a conflict' USING ERRCODE = '{code}';"
                                     " END $$"))
        return real(r)

    monkeypatch.setattr(book, "_store", conflicting)
    book.store(result("bob", "s1", 3))
    assert len(calls) == 3 and book.latest("a1")[0].score == 3


def test_a_postgresql_error_that_would_happen_again_is_not_retried(postgres_url, monkeypatch):
    book = Gradebook(postgres_url, attempts=3)
    calls = []

    def refused(r):
        calls.append(r.student)
        with book.session() as session:
            session.execute(text("SELECT * FROM no_such_table"))

    monkeypatch.setattr(book, "_store", refused)
    with pytest.raises(GradebookError, match="write failed: ProgrammingError"):
        book.store(result("bob", "s1", 3))
    assert calls == ["bob"]


def test_without_postgresql_the_tests_fail_and_say_what_to_install(tmp_path, monkeypatch):
    from tests import postgres

    monkeypatch.setenv("PATH", str(tmp_path))  # no initdb on it, nor in Debian's folder
    with pytest.raises(pytest.fail.Exception, match="apt-get install postgresql"):
        postgres.binaries(tmp_path / "usr-lib-postgresql")
    assert postgres.binaries().name == "bin"  # here it is installed


def test_graders_opening_one_new_gradebook_at_once_make_it_once(gradebook_target):
    start = threading.Barrier(6)

    def open_it(_: int) -> str | None:
        start.wait()
        return Gradebook(gradebook_target).revision

    with ThreadPoolExecutor(6) as pool:
        assert set(pool.map(open_it, range(6))) == {migrations.head()}
    assert _schema_drift(Gradebook(gradebook_target)) == []
