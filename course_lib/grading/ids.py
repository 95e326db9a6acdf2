"""The one rule for student ids, and how student-written text is made safe to show.

A student id becomes a folder name (``submitted/<id>/``), a gradebook key and a CSV cell, so
it must be short, plain ASCII, and unable to climb out of a folder or start a formula.

    >>> check_student_id("alice_01")
    'alice_01'
    >>> check_student_id("../carol")
    Traceback (most recent call last):
    ...
    ValueError: student id '../carol' is not allowed: use 1-64 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit
    >>> printable("ok\\x1b[2Jfine\\n")
    'ok?[2Jfine '
    >>> spreadsheet_safe("=HYPERLINK(1)")
    "'=HYPERLINK(1)"
"""

from __future__ import annotations

import re

__all__ = ["STUDENT_ID_RULE", "check_student_id", "is_student_id", "printable", "spreadsheet_safe"]

STUDENT_ID_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RULE_TEXT = "use 1-64 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit"


def is_student_id(value) -> bool:
    """True when ``value`` follows :data:`STUDENT_ID_RULE`."""
    return isinstance(value, str) and STUDENT_ID_RULE.fullmatch(value) is not None


def check_student_id(value) -> str:
    """``value`` if it is a valid student id, else a ``ValueError`` that says the rule."""
    if not is_student_id(value):
        raise ValueError(f"student id {value!r} is not allowed: {_RULE_TEXT}")
    return value


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text, max_chars: int | None = None) -> str:
    """``text`` on one line with control characters (terminal escapes, bidi overrides) replaced
    by ``?`` and whitespace runs collapsed: safe to print on a terminal or in a log."""
    s = _CONTROL.sub("?", str(text))
    s = " ".join(s.split("\n")).replace("\t", " ").replace("\r", " ")
    if max_chars is not None and len(s) > max_chars:
        s = s[:max_chars] + "..."
    return s


def spreadsheet_safe(text) -> str:
    """A CSV cell that a spreadsheet shows as text: a leading ``= + - @`` (or tab, CR) gets a
    quote in front, so it is never evaluated as a formula (OWASP's CSV-injection advice)."""
    s = printable(text)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s
