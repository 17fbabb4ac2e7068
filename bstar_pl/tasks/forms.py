"""Answer strings in the forms sympy reads: what models write around a number or in place of LaTeX
(`2,500.50€`, `45 cm`, `2 500`, `y ≤ 4`, `−3`) made plain, and comma lists made tuples where order counts.
Regular expressions on strings of at most `grading.MAX_ANSWER_CHARS`; nothing here parses.
"""

from __future__ import annotations

import re

_UNICODE = {
    "−": "-",
    "≤": "\\leq ",
    "≥": "\\geq ",
    "≠": "\\neq ",
    "×": "\\times ",
    "÷": "\\div ",
    "·": "\\cdot ",
    "π": "\\pi ",
    "∞": "\\infty ",
    "°": "^\\circ",
    "\u00a0": " ",
    "\u202f": " ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_CURRENCY = r"(?:\\\$|\$|€|£|¥|₹|\\euro|\\pounds|\\text\{\s*(?:\\euro|€|£)\s*\})"
_CURRENCY_AROUND = re.compile(rf"^{_CURRENCY}\s*(?=[-\d.])|(?<=[\d.])\s*{_CURRENCY}$")
# Between groups of three digits: a comma, a space, a thin space (`\,`, `\!`, `~`, `\ `) or `{,}`;
# not ", " (comma and space), which separates the items of a list.
_SEPARATOR = r"(?:,\\!\s*|,|\\!|\\,|\\ |~|\{,\}| )"
_NUMBER = re.compile(rf"(-?)([1-9]\d{{0,2}}(?:{_SEPARATOR}\d{{3}})+|\d+)(\.\d+)?")
_DIGITS = re.compile(r"\d")
_DECIMAL = re.compile(r"-?\d*\.\d+")
_DECIMAL_COMMA = re.compile(r"-?\d+,\d+")
# A number and a unit of words ("45 cm", "18 dollars", "3 square feet"); math words are no unit.
_UNIT = re.compile(r"(-?\.?\d(?:[\d.,]|[ ~](?=\d{3}))*)\s+([A-Za-z]{2,}\.?(?:\s+[A-Za-z]{2,}\.?)*)")
_MATH_WORDS = {"pi", "sqrt", "log", "ln", "sin", "cos", "tan", "exp", "and", "or", "mod", "times", "cdot"}
_PERCENT = re.compile(r"\s*(?:percent|pct)$", re.IGNORECASE)
# "x = 5", "\\mathbf{M} = ...", "f(x) = ...": a name given a value (no other "=", no "==").
_NAME = r"(?:[A-Za-z]|\\(?:mathbf|vec|boldsymbol|mathrm)\{\s*[A-Za-z]\s*\}|[A-Za-z]\([A-Za-z]\))"
_ASSIGNED = re.compile(rf"{_NAME}\s*=\s*([^=<>]+)")
_RELATION = re.compile(r"=|<|>|\\(?:le|ge|ne|leq|geq|neq|lt|gt|in|text|mbox)\b")


def plain(answer: str) -> str:
    """`answer` with unicode operators as LaTeX, currency signs and a unit after a number dropped, a
    percent word as `\\%`, and a number's thousands separators removed ("2 500" -> "2500")."""
    answer = _UNICODE_RE.sub(lambda m: _UNICODE[m[0]], answer).strip()
    if not _DIGITS.search(answer):
        return answer
    answer = _PERCENT.sub("\\%", answer)
    answer = _CURRENCY_AROUND.sub("", answer).strip()
    unit = _UNIT.fullmatch(answer)
    if unit and not {w.rstrip(".").lower() for w in unit[2].split()} & _MATH_WORDS:
        answer = unit[1]
    number = _NUMBER.fullmatch(answer)
    if number:
        digits = re.sub(r"\D", "", number[2])
        answer = number[1] + digits + (number[3] or "")
    return answer


def decimal_comma(answer: str, other: str) -> str:
    """`answer` "1000,99" as "1000.99" where `other` is a decimal number: then it cannot be a list."""
    if _DECIMAL_COMMA.fullmatch(answer) and _DECIMAL.fullmatch(other):
        return answer.replace(",", ".")
    return answer


def value_of(answer: str) -> str:
    """The value of an assignment ("\\mathbf{M} = \\begin{pmatrix}...", "x = 5"), for a gold that is a value;
    anything else unchanged."""
    m = _ASSIGNED.fullmatch(answer)
    return m[1].strip() if m else answer


def is_tuple(answer: str) -> bool:
    """Written as a tuple or an open interval: `(a, b, ...)`."""
    answer = answer.replace("\\left(", "(").replace("\\right)", ")")
    return answer.startswith("(") and answer.endswith(")") and _top_level_items(answer[1:-1]) > 1


def as_tuple(answer: str) -> str:
    """A bare list of values ("3, 8, -1") as a tuple ("(3, 8, -1)"), so that order counts (math-verify
    reads a bare list as a set); anything else unchanged: one value, a bracketed list, equations."""
    if _top_level_items(answer) > 1 and not _RELATION.search(answer) and not _NUMBER.fullmatch(answer):
        return f"({answer})"
    return answer


def _top_level_items(answer: str) -> int:
    """How many comma-separated items `answer` has outside brackets of any kind."""
    depth, items = 0, 1
    for ch in answer:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items += 1
    return items
