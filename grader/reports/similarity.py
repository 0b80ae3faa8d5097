"""Copied work: pairs of submissions whose student-written code, or training results, are alike.

Each submission's written code is its code cells with the starter's given lines left out. The
code is tokenized (Python's `tokenize`) and normalised: comments, docstrings, layout and the
student's own names drop out (each becomes one placeholder), while keywords, operators,
literals, builtins, imported modules, attribute names and keyword-argument names (the library
API the code calls) stay. Similarity is the Jaccard index of the two submissions' sets of
K-token fingerprints (every K-gram, hashed: notebooks are small enough that winnowing would only
lose precision), counted through an inverted index so that 300 students take well under a
second. Fingerprints that many submissions share (what the assignment makes everyone write) are
left out, as MOSS does, and a submission with too little written code (the starter alone) is
never paired.

Identical results: the text outputs of cells that train or predict (their code calls `fit`,
`predict` or `evaluate`) and print a number with 4 or more decimals, and the weights of the
models the checks loaded (`Result.weights`: sha256 digests made in the trusted checker). The
grader seeds every kernel alike, so identical code gives identical numbers and weights too
(and an untrained model of the same layers has the same weights): equal results only support a
code match, and list a pair with less code similarity (`RESULT_THRESHOLD`), never on their own;
results more than the common share of submissions have are left out. Nothing here runs student
code: it reads the stored executed notebooks and digests.

A notebook is student text, so every step is linear in it (no pattern that backtracks across
lines), and bounded: only the first MAX_CELL_CHARS of each code cell and MAX_CODE_CHARS of a
notebook are read, and reading one stops after MAX_SECONDS (what was read by then is compared).
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import keyword
import re
import time
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from grader.model.result import Result

CODE_THRESHOLD = 0.7  # code similarity from which a pair is listed on its own
RESULT_THRESHOLD = 0.5  # code similarity from which identical results list a pair
K = 5  # tokens per fingerprint
MIN_FINGERPRINTS = 20  # written code smaller than this (a starter, a line or two) is never paired
MAX_CODE_CHARS = 300_000  # of code per submission compared (a notebook of ~6,000 lines)
MAX_CELL_CHARS = 50_000  # of each code cell: one huge cell does not push out all the others
MAX_OUTPUT_CHARS = 100_000  # of a cell's outputs, for identical results
MAX_SECONDS = 2.0  # reading one notebook's code: past this, the rest of it is left out
PLACEHOLDER = "V"
_BUILTINS = frozenset(dir(builtins))
_DECIMALS = re.compile(r"\d\.\d{4,}")
_TRAINING_CALL = re.compile(r"\.(fit|predict|evaluate)[ \t]*\(")
# A time in Keras' progress lines; starting only where a number starts keeps it linear
_TIMING = re.compile(r"(?<![\d.])\d+(?:\.\d+)?[ \t]*(?:ms|s|us|µs)(?:/step)?\b")


@dataclass(frozen=True)
class Written:
    """One submission's student-written code, as read from its executed notebook."""

    student: str
    cells: list[tuple[int, str]]  # (cell index, written lines) of each code cell with any
    fingerprints: frozenset[int]
    results: dict[str, str] = field(default_factory=dict)  # result digest -> what it is, in words

    @property
    def text(self) -> str:
        """The written code, cell by cell, for the side-by-side page."""
        return "\n".join(f"# ---- cell {index} ----\n{code}" for index, code in self.cells)


@dataclass(frozen=True)
class Pair:
    """Two submissions that are suspiciously alike, and why."""

    first: Written
    second: Written
    similarity: float  # Jaccard index of their code fingerprints, 0 to 1
    identical_results: list[str]  # the results both have, in words

    @property
    def why(self) -> str:
        """The reasons in words, for staff."""
        reasons = [f"code {self.similarity:.0%} alike"]
        if self.identical_results:
            reasons.append(f"identical {', '.join(self.identical_results)}")
        return "; ".join(reasons)


# Reading the notebooks ---------------------------------------------------------------------------

def _code_cells(notebook_json: str) -> list[tuple[int, str, list[Any]]]:
    """(index, source, outputs) of each code cell of a notebook's JSON; [] if it is not one."""
    try:
        notebook = json.loads(notebook_json)
        cells = notebook["cells"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return []
    found = []
    for index, cell in enumerate(cells if isinstance(cells, list) else []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(map(str, source)) if isinstance(source, list) else str(source)
        outputs = cell.get("outputs")
        found.append((index, source, outputs if isinstance(outputs, list) else []))
    return found


def starter_lines(starter_json: str | None) -> frozenset[str]:
    """Every stripped line of the starter's code cells: the given code students need not write."""
    lines: set[str] = set()
    for _, source, _ in _code_cells(starter_json or ""):
        lines.update(line.strip() for line in source.splitlines())
    lines.discard("")
    return frozenset(lines)


def written_lines(source: str, given: frozenset[str]) -> str:
    """SOURCE without its lines identical (up to indentation) to the starter's given lines."""
    kept = [line for line in source.splitlines() if line.strip() and line.strip() not in given]
    return "\n".join(kept)


# Normalising ----------------------------------------------------------------------------------

def _raw_tokens(code: str) -> list[tokenize.TokenInfo]:
    """The tokens of CODE; a cell that Python cannot tokenize (magics, syntax errors) line by line,
    its unreadable lines as words and symbols."""
    try:
        return list(tokenize.generate_tokens(io.StringIO(code + "\n").readline))
    except (tokenize.TokenError, SyntaxError):
        pass
    tokens: list[tokenize.TokenInfo] = []
    for row, line in enumerate(code.splitlines(), 1):
        try:
            tokens.extend(list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline)))
        except (tokenize.TokenError, SyntaxError):
            for match in re.finditer(r"\w+|\S", line):
                kind = tokenize.NAME if match.group()[0].isalpha() or match.group()[0] == "_" else tokenize.OP
                tokens.append(tokenize.TokenInfo(kind, match.group(), (row, 0), (row, 0), line))
    return tokens


_LAYOUT = frozenset({tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                     tokenize.ENDMARKER})


def normalise(code: str, imported: frozenset[str] = frozenset()) -> list[str]:
    """CODE as tokens with comments, docstrings, layout and the student's own names left out."""
    tokens = [t for t in _raw_tokens(code) if t.type != tokenize.COMMENT]
    out: list[str] = []
    previous = ""
    for i, token in enumerate(tokens):
        if token.type in _LAYOUT:
            continue
        following = tokens[i + 1].string if i + 1 < len(tokens) else ""
        if token.type == tokenize.STRING and _statement(tokens, i):
            continue  # a docstring or a bare string statement: documentation, not code
        text = token.string
        if token.type == tokenize.NAME and not _kept_name(text, previous, following, imported):
            text = PLACEHOLDER
        out.append(text)
        previous = token.string
    return out


def _statement(tokens: list[tokenize.TokenInfo], i: int) -> bool:
    """Whether the token at I stands alone as a statement (a docstring, for a string)."""
    before = tokens[i - 1].type if i else tokenize.NEWLINE
    after = tokens[i + 1].type if i + 1 < len(tokens) else tokenize.NEWLINE
    return before in _LAYOUT and after in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)


def _kept_name(name: str, previous: str, following: str, imported: frozenset[str]) -> bool:
    """Whether NAME is part of the language or the library API rather than the student's name."""
    return (keyword.iskeyword(name) or name in _BUILTINS or name in imported or previous == "."
            or (following == "=" and previous in ("(", ",")))


def imported_names(sources: list[str]) -> frozenset[str]:
    """The module names and aliases that SOURCES import (np, keras, plt, ...)."""
    names: set[str] = set()
    for source in sources:
        for line in source.splitlines():
            words = line.split(None, 3)  # import a.b as c, d | from a import (b as c, d)
            if len(words) > 1 and words[0] == "import":
                imported = line.split(None, 1)[1]
            elif len(words) > 3 and words[0] == "from" and words[2] == "import":
                imported = words[3]
            else:
                continue
            for part in imported.replace("(", " ").replace(")", " ").split(","):
                if part.split():
                    names.add(part.split()[-1].split(".")[0])
    return frozenset(names)


def fingerprints(tokens: list[str], k: int = K) -> frozenset[int]:
    """The hashes of every K consecutive tokens (Python's own hash: they live for one process)."""
    return frozenset(hash(tuple(tokens[i:i + k])) for i in range(max(0, len(tokens) - k + 1)))


def _results(cells: list[tuple[int, str, list[Any]]], weights: dict[str, str]) -> dict[str, str]:
    """Digests of the text that cells which train or predict print with 4+ decimals, and of the
    models' weights, each with what it is in words."""
    found: dict[str, str] = {}
    for index, source, outputs in cells:
        if not _TRAINING_CALL.search(source):
            continue
        text = "".join(_output_text(o) for o in outputs)
        if _DECIMALS.search(text):
            digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
            found.setdefault(f"output:{digest}", f"training or prediction output (cell {index})")
    for name, digest in sorted(weights.items()):
        found.setdefault(f"weights:{digest}", f"weights of the trained model ({name})")
    return found


def _output_text(output: Any) -> str:
    """The plain text of one output (stream or result), progress bars and timings aside."""
    if not isinstance(output, dict):
        return ""
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    else:
        data = output.get("data")
        text = data.get("text/plain", "") if isinstance(data, dict) else ""
    text = "".join(map(str, text)) if isinstance(text, list) else str(text)
    # Keras' progress lines hold times (e.g. "2ms/step") that differ from run to run.
    return _TIMING.sub("", text[:MAX_OUTPUT_CHARS])


def written(result: Result, given: frozenset[str], imported: frozenset[str] = frozenset()) -> Written:
    """RESULT's student-written code and results, from its executed notebook: the first
    MAX_CELL_CHARS of each cell, MAX_CODE_CHARS in all, what MAX_SECONDS allow."""
    deadline = time.monotonic() + MAX_SECONDS
    cells = _code_cells(result.executed_notebook or "")
    sources, left = [], MAX_CODE_CHARS
    for index, source, _ in cells:
        sources.append((index, source[:min(MAX_CELL_CHARS, left)]))
        left -= len(sources[-1][1])
    names = imported | imported_names([source for _, source in sources])
    own: list[tuple[int, str]] = []
    tokens: list[str] = []
    for index, source in sources:
        if time.monotonic() >= deadline:  # the rest of the notebook is left out, unread
            break
        code = written_lines(source, given)
        if code:
            own.append((index, code))
            tokens.extend(normalise(code, names))
    return Written(result.student, own, fingerprints(tokens), _results(cells, result.weights or {}))


# Pairing ---------------------------------------------------------------------------------------

def similar_pairs(results: list[Result], starter_json: str | None, *,
                  threshold: float = CODE_THRESHOLD,
                  result_threshold: float = RESULT_THRESHOLD) -> list[Pair]:
    """The pairs of RESULTS whose written code is at least THRESHOLD alike (Jaccard), or whose
    identical results come with code at least RESULT_THRESHOLD alike; most alike first."""
    given = starter_lines(starter_json)
    starter_imports = imported_names([s for _, s, _ in _code_cells(starter_json or "")])
    subs = [written(r, given, starter_imports) for r in results if r.executed_notebook]
    common = max(10, len(subs) // 10)  # shared by more submissions than this: the assignment's
    prints = _filtered(subs, common)
    kept = [(w, p) for w, p in zip(subs, prints, strict=True) if len(p) >= MIN_FINGERPRINTS]
    shared = _shared_counts([p for _, p in kept])
    same_results = _same_results([w for w, _ in kept], common)
    pairs = []
    for (i, j) in set(shared) | set(same_results):
        (a, pa), (b, pb) = kept[i], kept[j]
        inter = shared.get((i, j), 0)
        score = inter / (len(pa) + len(pb) - inter)
        identical = same_results.get((i, j), [])
        if score >= threshold or (identical and score >= result_threshold):
            pairs.append(Pair(a, b, score, identical))
    return sorted(pairs, key=lambda p: (-p.similarity, p.first.student, p.second.student))


def _filtered(subs: list[Written], common: int) -> list[frozenset[int]]:
    """Each submission's fingerprints without those more than COMMON submissions share."""
    counts = Counter(f for w in subs for f in w.fingerprints)
    return [frozenset(f for f in w.fingerprints if counts[f] <= common) for w in subs]


def _shared_counts(prints: list[frozenset[int]]) -> dict[tuple[int, int], int]:
    """How many fingerprints each pair of submissions (by index) shares, through an inverted index."""
    holders: dict[int, list[int]] = {}
    for index, found in enumerate(prints):
        for f in found:
            holders.setdefault(f, []).append(index)
    shared: Counter[tuple[int, int]] = Counter()
    for indices in holders.values():
        shared.update(combinations(indices, 2))
    return dict(shared)


def _same_results(subs: list[Written], common: int) -> dict[tuple[int, int], list[str]]:
    """The pairs (by index) with an identical result that at most COMMON submissions print."""
    holders: dict[str, list[int]] = {}
    for index, w in enumerate(subs):
        for digest in w.results:
            holders.setdefault(digest, []).append(index)
    same: dict[tuple[int, int], list[str]] = {}
    for digest, indices in holders.items():
        if len(indices) <= common:
            for i, j in combinations(indices, 2):
                first, second = subs[i].results[digest], subs[j].results[digest]
                same.setdefault((i, j), []).append(first if first == second else f"{first} / {second}")
    return same
