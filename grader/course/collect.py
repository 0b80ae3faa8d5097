"""LMS intake: a Moodle or Canvas "download all submissions" archive (or a folder) to DIR/STUDENT.ipynb.

The file names these downloads use, the only place the LMS says who handed in what:

- Moodle: `Full Name_PARTICIPANTID_assignsubmission_file_/original.ipynb` (a folder per student),
  or the same prefix glued to the file name (`..._assignsubmission_file_original.ipynb`); other
  plugins (`_assignsubmission_onlinetext_`) are not notebooks and are ignored. The name is read up
  to the FIRST `_ID_assignsubmission_`: what follows is the file name the student chose, which
  may itself look like another student's prefix.
- Canvas: `login_USERID_ATTACHMENTID_original.ipynb`, `login_LATE_USERID_ATTACHMENTID_...` for a
  hand-in after the due date, and Canvas renames a file handed in again `original-1.ipynb`,
  `original-2.ipynb`.
- A plain folder (or zip) of `STUDENT.ipynb` or `STUDENT/*.ipynb`.

Nothing is extracted by its archive path: each kept notebook is written as DIR/STUDENT.ipynb, under
a name made from the student id, so no member can land outside DIR. Members are read with bounded
reads; links, unsafe paths, huge members and bomb-like archives are refused with a reason.
DIR/.collected.json names the assignment DIR was collected for: collecting another one into it is
refused.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import stat
import struct
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO

from grader.course.roster import RosterEntry
from grader.model.errors import GraderError
from grader.model.submission import MANIFEST, MAX_NOTEBOOK_BYTES, read_manifest, slug, student_id
from grader.model.text import for_terminal

MOODLE = re.compile(r"^(?P<name>.+?)_(?P<id>\d+)_assign(?P<kind>submission|feedback)_(?P<plugin>[a-z]+)_"
                    r"(?P<rest>.*)$")
CANVAS = re.compile(r"^(?P<login>[^_/]+?)(?P<late>_LATE)?_(?P<id>\d+)(?:_(?P<attachment>\d+))?_(?P<file>.+)$")
RESUBMITTED = re.compile(r"^(?P<base>.+)-(?P<n>\d+)$")
NOISE = ("__MACOSX/", ".DS_Store", "Thumbs.db")  # what zipping on a Mac or Windows adds


class CollectError(GraderError):
    """The archive or folder cannot be collected at all (missing, not a zip, bomb-like)."""


@dataclass(frozen=True)
class Limits:
    """What an archive may hold before it is refused: beyond these it is no LMS download."""

    members: int = 20_000  # entries in the archive
    member_bytes: int = MAX_NOTEBOOK_BYTES  # one notebook, uncompressed (the grader's notebook limit)
    total_bytes: int = 4_000_000_000  # every member together, uncompressed, as the headers say
    ratio: float = 100.0  # uncompressed / compressed of one member over 1 MB (notebooks: < 20)


@dataclass(frozen=True)
class Member:
    """One file of the archive or folder: its path in there, declared sizes, time and reader."""

    path: str
    size: int
    compressed: int
    time: datetime
    open: Callable[[], IO[bytes]]


@dataclass(frozen=True)
class HandIn:
    """A notebook the LMS names: who handed it in, as the LMS says, and when."""

    member: Member
    lms: str  # moodle, canvas or folder
    who: str  # Moodle's full name, Canvas' login, the folder's STUDENT
    lms_id: str  # Moodle's participant id, Canvas' user id, or ""
    source: str  # the file name the student handed in
    late: bool = False  # the LMS marked it late (Canvas' _LATE_)
    attempt: int = 0  # Canvas' -N of a file handed in again
    attachment: int = 0  # Canvas' attachment id: later uploads have larger ones


@dataclass(frozen=True)
class Skipped:
    """A file not collected, and why (refused, unmapped, ignored, or an older hand-in)."""

    path: str
    kind: str
    why: str


@dataclass(frozen=True)
class Collected:
    """A notebook written as DIR/STUDENT.ipynb, with what the manifest keeps of it."""

    student: str
    name: str
    lms_id: str
    source: str
    path: str  # where it was in the archive or folder
    submitted_at: datetime
    late: bool

    def manifest(self) -> dict[str, object]:
        """This hand-in's entry of DIR/.collected.json."""
        return {"submitted_at": self.submitted_at.isoformat(), "source": self.source,
                "name": self.name, "lms_id": self.lms_id, "late": self.late}


@dataclass
class Collection:
    """What `collect` did: the notebooks written, the files skipped, the roster's missing students."""

    folder: Path
    collected: list[Collected] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    missing: list[RosterEntry] = field(default_factory=list)


def collect(source: Path, out: Path, *, assignment: str, notebook_name: str,
            roster: list[RosterEntry] | None = None, limits: Limits = Limits()) -> Collection:
    """Collect the latest notebook of each student in SOURCE (a zip or a folder) into OUT, for
    ASSIGNMENT (recorded in OUT's manifest)."""
    result = Collection(out)
    _check_output(out, assignment)  # before reading: a wrong -o is one line, and nothing changes
    with contextlib.ExitStack() as stack:
        members = _members(source, limits, result.skipped, stack)
        chosen = _choose(_hand_ins(members, result.skipped), roster, notebook_name, result.skipped)
        _prepare_output(out, assignment)
        budget = [limits.total_bytes]
        for student, (hand_in, entry) in sorted(chosen.items()):
            data = _bounded_read(hand_in.member, limits, budget, result.skipped)
            if data is None:
                continue
            _write_atomic(out / f"{student}.ipynb", data)
            name = entry.name if entry and entry.name else hand_in.who
            lms_id = entry.lms_id if entry and entry.lms_id else hand_in.lms_id
            result.collected.append(Collected(student, name, lms_id, hand_in.source,
                                              hand_in.member.path, hand_in.member.time, hand_in.late))
    manifest = {"assignment": assignment, "students": {c.student: c.manifest() for c in result.collected}}
    _write_atomic(out / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False).encode())
    handed_in = {c.student for c in result.collected}
    result.missing = [e for e in roster or [] if slug(e.student) not in handed_in]
    return result


# --- the members of a zip or a folder, refused where hostile ---------------------------------


def _members(source: Path, limits: Limits, skipped: list[Skipped],
             stack: contextlib.ExitStack) -> list[Member]:
    """The regular .ipynb files in SOURCE that may be read (a zip stays open in STACK); the others
    are in SKIPPED with why."""
    if source.is_dir():
        return list(_folder_members(source, limits, skipped))
    if not source.exists():
        raise CollectError(f"{source} does not exist: pass the LMS's zip of all submissions or a "
                           "folder of STUDENT.ipynb")
    try:
        archive = stack.enter_context(zipfile.ZipFile(source))
    except (zipfile.BadZipFile, OSError) as exc:
        raise CollectError(f"{source} is not a zip archive ({exc}): pass the zip the LMS's "
                           "'download all submissions' gives, or a folder") from None
    return list(_zip_members(archive, source, limits, skipped))


def _zip_members(archive: zipfile.ZipFile, source: Path, limits: Limits,
                 skipped: list[Skipped]) -> Iterator[Member]:
    infos = archive.infolist()
    if len(infos) > limits.members:
        raise CollectError(f"{source} has {len(infos)} members, more than {limits.members}: no LMS "
                           "download is that large (a zip bomb?); nothing was collected")
    total = sum(i.file_size for i in infos)
    if total > limits.total_bytes:
        raise CollectError(f"{source} would unpack to {total / 1e6:.0f} MB, more than "
                           f"{limits.total_bytes / 1e6:.0f} MB (a zip bomb?); nothing was collected")
    for info in infos:
        if info.is_dir():
            continue
        why = _unsafe_zip_member(info, limits)
        if why:
            skipped.append(Skipped(info.filename, "refused", why))
        elif _noted_as_other(info.filename, skipped):
            continue
        else:
            yield Member(info.filename, info.file_size, info.compress_size, _zip_time(info),
                         functools.partial(archive.open, info))


def _unsafe_zip_member(info: zipfile.ZipInfo, limits: Limits) -> str:
    """Why this member may not be read ("" when it may)."""
    if why := _unsafe_path(info.filename):
        return why
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "a symbolic link (links are never extracted)"
    if kind not in (0, stat.S_IFREG):
        return "not a regular file"
    if info.flag_bits & 0x1:
        return "encrypted"
    if not info.filename.lower().endswith(".ipynb"):
        return ""  # ignored below, whatever its size
    return _too_large(info.file_size, info.compress_size, limits)


def _too_large(size: int, compressed: int, limits: Limits) -> str:
    """Why a member of SIZE bytes (COMPRESSED in the archive) is refused, or ""."""
    if size > limits.member_bytes:
        return f"{size / 1e6:.0f} MB unpacked, more than the {limits.member_bytes / 1e6:.0f} MB a notebook may be"
    if size > 1_000_000 and size > limits.ratio * max(compressed, 1):
        return (f"compressed {size / max(compressed, 1):.0f} to 1, more than {limits.ratio:.0f} to 1:"
                " a zip bomb, not a notebook")
    return ""


def _unsafe_path(name: str) -> str:
    """Why an archive path is unsafe ("" when it is not): absolute, a drive, '..', a NUL."""
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        return "an absolute path (refused: it would be written outside the target)"
    if ".." in text.split("/"):
        return "a path with '..' (refused: it would be written outside the target)"
    if "\0" in text or any(unicodedata.category(c) == "Cc" for c in text):
        return "a path with control characters"
    return ""


def _noted_as_other(path: str, skipped: list[Skipped]) -> bool:
    """Whether PATH is no notebook (then noted in SKIPPED as ignored, except OS noise)."""
    if path.lower().endswith(".ipynb") and not any(n in path for n in NOISE):
        return False
    if not any(n in path for n in NOISE):
        skipped.append(Skipped(path, "ignored", "not a notebook (.ipynb)"))
    return True


def _zip_time(info: zipfile.ZipInfo) -> datetime:
    """The member's time: the UTC time of its extended-timestamp field, else its local date-time."""
    extra = info.extra
    while len(extra) >= 4:
        tag, size = struct.unpack("<HH", extra[:4])
        body = extra[4:4 + size]
        if tag == 0x5455 and len(body) >= 5 and body[0] & 1:
            return datetime.fromtimestamp(struct.unpack("<i", body[1:5])[0], UTC)
        extra = extra[4 + size:]
    # a zip's date-time has no zone: the LMS wrote it in its server's, taken as this machine's
    return datetime(*info.date_time).astimezone()


def _folder_members(root: Path, limits: Limits, skipped: list[Skipped]) -> Iterator[Member]:
    """The files under ROOT, without following links; links and odd files are refused."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        base = Path(folder)
        for name in sorted(dirs):
            if (base / name).is_symlink():
                skipped.append(Skipped(_rel(base / name, root), "refused",
                                       "a symbolic link (links are never followed)"))
        dirs[:] = sorted(d for d in dirs if not (base / d).is_symlink() and not d.startswith("."))
        for name in sorted(files):
            path = base / name
            rel = _rel(path, root)
            if name.startswith(".") or _noted_as_other(rel, skipped):
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                skipped.append(Skipped(rel, "refused", "a symbolic link (links are never followed)"))
            elif not stat.S_ISREG(info.st_mode):
                skipped.append(Skipped(rel, "refused", "not a regular file"))
            elif why := _too_large(info.st_size, info.st_size, limits):
                skipped.append(Skipped(rel, "refused", why))
            else:
                yield Member(rel, info.st_size, info.st_size,
                             datetime.fromtimestamp(info.st_mtime, UTC),
                             functools.partial(_open_no_follow, path))


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _open_no_follow(path: Path) -> IO[bytes]:
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), "rb")


def _bounded_read(member: Member, limits: Limits, budget: list[int],
                  skipped: list[Skipped]) -> bytes | None:
    """The member's bytes, read in chunks and never past its declared size, the member limit or
    the budget left of the total; None (and why in SKIPPED) when it holds more or cannot be read."""
    cap = min(member.size, limits.member_bytes, budget[0])
    chunks, got = [], 0
    try:
        with member.open() as stream:
            while chunk := stream.read(min(1 << 20, cap + 1 - got)):
                got += len(chunk)
                if got > cap:
                    skipped.append(Skipped(member.path, "refused", "holds more than its header says"
                                           " or than the limits allow (a zip bomb?)"))
                    return None
                chunks.append(chunk)
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as exc:
        skipped.append(Skipped(member.path, "refused", f"cannot be read: {exc}"))
        return None
    budget[0] -= got
    return b"".join(chunks)


# --- who handed in what ---------------------------------------------------------------------


def _hand_ins(members: list[Member], skipped: list[Skipped]) -> list[HandIn]:
    """The LMS's reading of each member's path; paths that follow no known layout are skipped."""
    found = []
    for member in members:
        hand_in = _parse(member)
        if isinstance(hand_in, str):
            skipped.append(Skipped(member.path, "unmapped" if hand_in.startswith("no ") else "ignored",
                                   hand_in))
        else:
            found.append(hand_in)
    return found


def _parse(member: Member) -> HandIn | str:
    """Who handed in MEMBER by Moodle's, Canvas' or a plain folder's naming; else why not."""
    parts = PurePosixPath(member.path.replace("\\", "/")).parts
    for i, part in enumerate(parts):
        if m := MOODLE.match(part):
            if m["plugin"] != "file" or m["kind"] == "feedback":
                return f"Moodle's {m['plugin']} submission, not a file hand-in"
            source = m["rest"] if i == len(parts) - 1 else parts[-1]
            return HandIn(member, "moodle", m["name"].strip(), m["id"], source)
    if m := CANVAS.match(parts[-1]):
        source = m["file"]
        resubmitted = RESUBMITTED.match(PurePosixPath(source).stem)
        return HandIn(member, "canvas", m["login"], m["id"], source, late=bool(m["late"]),
                      attempt=int(resubmitted["n"]) if resubmitted else 0,
                      attachment=int(m["attachment"] or 0))
    if len(parts) == 1:
        return HandIn(member, "folder", PurePosixPath(parts[0]).stem, "", parts[0])
    if len(parts) == 2:
        return HandIn(member, "folder", parts[0], "", parts[1])
    return ("no Moodle, Canvas or STUDENT.ipynb name: expected Full Name_ID_assignsubmission_file_/,"
            " login_ID_ATTACHMENT_name.ipynb, STUDENT.ipynb or STUDENT/name.ipynb")


def _choose(hand_ins: list[HandIn], roster: list[RosterEntry] | None, notebook_name: str,
            skipped: list[Skipped]) -> dict[str, tuple[HandIn, RosterEntry | None]]:
    """Each student's latest hand-in (by file stem) and roster entry; the rest go to SKIPPED."""
    by_student = _by_student(hand_ins, roster, skipped)
    chosen = {}
    for student, candidates in by_student.items():
        named = [c for c in candidates if _base_name(c[0].source) == notebook_name] or candidates
        best = max(named, key=lambda c: _recency(c[0]))
        chosen[student] = best
        for hand_in, _ in candidates:
            if hand_in is not best[0]:
                skipped.append(Skipped(hand_in.member.path, "older",
                                       f"{student} also handed in {best[0].member.path}, kept as the latest"))
    return chosen


def _by_student(hand_ins: list[HandIn], roster: list[RosterEntry] | None,
                skipped: list[Skipped]) -> dict[str, list[tuple[HandIn, RosterEntry | None]]]:
    """The hand-ins by student id (a file stem): the roster's, else one made from the LMS's names."""
    index = _RosterIndex(roster) if roster is not None else None
    by_student: dict[str, list[tuple[HandIn, RosterEntry | None]]] = {}
    for hand_in in hand_ins:
        entry, why = index.find(hand_in) if index else (None, "")
        if why:
            skipped.append(Skipped(hand_in.member.path, "unmapped", why))
            continue
        student = slug(student_id(entry.student if entry else _default_id(hand_in)))
        by_student.setdefault(student, []).append((hand_in, entry))
    if index:
        return by_student
    # without a roster, two people may share a name (or Moodle's blind marking's "Participant"):
    # different LMS ids under one made-up id are told apart by their LMS id
    for student, candidates in list(by_student.items()):
        if len({h.lms_id for h, _ in candidates}) > 1:
            del by_student[student]
            for hand_in, entry in candidates:
                by_student.setdefault(slug(f"{student}_{hand_in.lms_id}"), []).append((hand_in, entry))
    return by_student


def _recency(hand_in: HandIn) -> tuple[int, datetime, int]:
    """Later hand-ins sort higher: Canvas' -N first, then the time, then the attachment id."""
    return hand_in.attempt, hand_in.member.time, hand_in.attachment


def _base_name(source: str) -> str:
    """SOURCE without Canvas' -N of a file handed in again: notebook-2.ipynb -> notebook.ipynb."""
    path = PurePosixPath(source)
    m = RESUBMITTED.match(path.stem)
    return f"{m['base']}{path.suffix}" if m else source


def _default_id(hand_in: HandIn) -> str:
    """The id without a roster: an ASCII slug of Moodle's name or Canvas' login (else of the LMS's
    id), the folder's STUDENT as it is."""
    if hand_in.lms == "folder":
        return hand_in.who
    ascii_name = unicodedata.normalize("NFKD", hand_in.who).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    return name or f"{'participant' if hand_in.lms == 'moodle' else 'user'}_{hand_in.lms_id}"


def _key(text: str) -> str:
    """A name or login as compared: NFC, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


class _RosterIndex:
    """The roster looked up by what an LMS file name holds."""

    def __init__(self, roster: list[RosterEntry]) -> None:
        self.fields: dict[str, dict[str, list[RosterEntry]]] = {}
        for entry in roster:
            for name in ("student", "name", "lms_id", "login"):
                if value := getattr(entry, name):
                    self.fields.setdefault(name, {}).setdefault(_key(value), []).append(entry)

    def find(self, hand_in: HandIn) -> tuple[RosterEntry | None, str]:
        """The roster entry of HAND_IN, else why there is none (or more than one)."""
        lookups = {"moodle": [("lms_id", hand_in.lms_id), ("name", hand_in.who)],
                   "canvas": [("lms_id", hand_in.lms_id), ("login", hand_in.who)],
                   "folder": [("student", hand_in.who), ("login", hand_in.who)]}[hand_in.lms]
        for column, value in lookups:
            entries = self.fields.get(column, {}).get(_key(value), []) if value else []
            if len(entries) == 1:
                return entries[0], ""
            if len(entries) > 1:
                return None, f"{len(entries)} roster entries have {column} {value!r}: make them unique"
        said = " or ".join(f"{c} {v!r}" for c, v in lookups if v)
        return None, f"no roster entry with {said}: add the student to the roster"


# --- writing DIR ----------------------------------------------------------------------------


def _check_output(out: Path, assignment: str) -> None:
    """Refuse an OUT that is a file, or holds anything but an earlier collection of ASSIGNMENT."""
    if out.exists() and not out.is_dir():
        raise CollectError(f"-o {out} is a file: pass a folder for the collected notebooks")
    entries = list(out.iterdir()) if out.is_dir() else []
    if not entries:
        return
    if not (out / MANIFEST).is_file():
        raise CollectError(f"-o {out} is not empty and holds no {MANIFEST}: collect into a new or "
                           "empty folder, so that no other notebook is graded with these")
    former = _collected_for(out)
    if former != assignment:
        held = f"the collection of {former}" if former else "a collection that names no assignment"
        raise CollectError(f"-o {out} holds {held}, not of {assignment}: collect {assignment} into"
                           " its own folder (nothing was changed)")
    known = {f"{s}.ipynb" for s in read_manifest(out)} | {MANIFEST}
    strangers = [e.name for e in entries if e.name not in known]
    if strangers:
        raise CollectError(f"-o {out} holds files an earlier collect did not write"
                           f" ({for_terminal(strangers[0], cap=100)}, ...): collect into a new or empty folder")


def _collected_for(out: Path) -> str:
    """The assignment OUT's manifest says it was collected for ('' when it says none)."""
    try:
        found = json.loads((out / MANIFEST).read_bytes().decode("utf-8")).get("assignment")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return ""
    return found if isinstance(found, str) else ""


def _prepare_output(out: Path, assignment: str) -> None:
    """OUT made ready: new, empty, or a former collection of ASSIGNMENT (its notebooks removed)."""
    _check_output(out, assignment)  # again: the folder may have changed while the archive was read
    out.mkdir(parents=True, exist_ok=True)
    for entry in list(out.iterdir()):
        entry.unlink()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write DATA as PATH through a new file renamed over it (a link at PATH is replaced, not followed)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".collect-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
