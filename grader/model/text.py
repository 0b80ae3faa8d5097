"""Student text made safe for where it goes: a terminal, or a message of a few lines.

Anything a notebook controls (a student id, a file name, a cell's error, a check's message quoting
the student's values) may hold escape sequences, lone surrogates, NUL bytes or megabytes.
"""

from __future__ import annotations

import re

# C0 and C1 control characters, DEL, and the bidirectional overrides that reorder what a terminal
# shows; tab and newline are kept by `for_terminal` only where the caller allows lines
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_AND_LINES = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the colour codes of IPython's tracebacks, Keras' messages


def without_ansi(text: str) -> str:
    """TEXT without its terminal colour codes (ANSI CSI sequences), as a message quotes it."""
    return _ANSI.sub("", text)


def for_terminal(text: object, *, lines: bool = False, cap: int = 500) -> str:
    """TEXT as it may be printed on a staff terminal: every control character (escape sequences'
    ESC and CSI included, and tab and newline unless LINES) shown as '?', lone surrogates replaced,
    at most CAP characters."""
    text = str(text).encode("utf-8", "replace").decode("utf-8")
    text = (_CONTROL if lines else _CONTROL_AND_LINES).sub("?", text)
    return text if len(text) <= cap else text[: cap - 1] + "…"
