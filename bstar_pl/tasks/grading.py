"""Math answers: decide whether a final answer (found by `final_answer.find`) equals the gold answer.

Equivalence is symbolic (math-verify), so `\\frac{x}{7}+\\frac{2}{7}` equals `\\frac{x+2}{7}`, after the
forms that sympy does not read are made plain (currency signs, units, `2 500`, `≤`). Every comparison
is bounded: a size guard, a timer inside the grading process, and a hard deadline after which that
process is killed. `equivalent` never raises and returns False when time runs out.
"""

from __future__ import annotations

import atexit
import logging
import math
import re
import signal
import threading
from decimal import Decimal

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from bstar_pl.isolation import deadline as guard
from bstar_pl.tasks import forms

SOFT_TIMEOUT = 1.0  # CPU seconds of math-verify work per comparison, stopped by a timer in the grading process
HARD_TIMEOUT = 1.5  # wall seconds before the grading process is killed (C code that no timer interrupts)
MAX_ANSWER_CHARS = 400  # MATH500 gold answers are <= 53 characters; sympy needs seconds for 900
MAX_BRACE_DEPTH = 8  # gold answers nest <= 2 deep; 15 deep takes math-verify > 1 s
MAX_DIGITS = 10_000  # an answer's value written out; sympy takes seconds to compute 9^{9^9} (369 million)

_BRACES = re.compile(r"(?<!\\)[{}]")
_INTEGER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)")
_DECIMAL = re.compile(r"-?(?=\.?\d)\d*(?:\.(\d*))?")
# Numbers raised to numbers raised to numbers: "9^{9^9}", "10^{10^{10}}", "9**9**9"; and n! for a
# literal n or a power of ten ("(10^{9})!").
_TOWER = re.compile(r"\d{1,9}(?:\s*(?:\^|\*\*)\s*[{(]?\s*\d{1,9})+")
_FACTORIAL = re.compile(r"(?:10\s*\^\s*\{?\s*(\d{1,4})\s*\}?\s*\)?|(?<![\d.])(\d{1,9}))\s*!")
_CONFIG = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
WARM_UP = [
    ("\\frac{1}{2}", "0.5"),
    ("x+1", "1+x"),
    ("(1,2]", "(1,2)"),
    ("\\sqrt{2}", "2^{1/2}"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("\\text{A}", "\\text{(A)}"),
    ("90^\\circ", "\\frac{\\pi}{2}"),
    ("x=3", "3"),
    ("3\\pi", "9.42"),
]

# math-verify logs every timeout with the whole input (possibly 100 kB), and warns once that we run
# it without its own timeouts (ours replace them).
logging.getLogger("math_verify").setLevel(logging.CRITICAL)


def equivalent(pred: str | None, gold: str, ordered: bool = True) -> bool:
    """Whether answer `pred` equals `gold` mathematically. A bare list ("3, 8, -1") is a tuple, its
    order counts, unless `ordered` is False (a question that asks for all values in any order); a gold
    tuple always keeps its order. Never raises for any input (a grading process that cannot start at
    all, a broken install, does raise); False on timeout."""
    if pred is None:
        return False
    pred, gold = pred.strip(), gold.strip()
    if pred == gold:
        return True
    if _INTEGER.fullmatch(pred) and _INTEGER.fullmatch(gold):  # the common case, without sympy
        return _integer(pred) == _integer(gold)
    if not (_small(pred) and _small(gold)):
        return False
    pred, gold = forms.plain(pred), forms.plain(gold)
    pred, gold = forms.decimal_comma(pred, gold), forms.decimal_comma(gold, pred)
    if "=" not in gold:
        pred = forms.value_of(pred)
    if ordered or forms.is_tuple(gold):
        pred = forms.as_tuple(pred)
    if ordered:
        gold = forms.as_tuple(gold)
    if pred == gold:
        return True
    if _INTEGER.fullmatch(pred) and _INTEGER.fullmatch(gold):
        return _integer(pred) == _integer(gold)
    exact = _decimal(pred), _decimal(gold)
    if None not in exact:  # "18.00", "2.5": no sympy either
        return exact[0] == exact[1]
    if guard.inside():  # already in a grading process under a deadline
        return symbolic_equal(pred, gold)
    try:
        return _guard().call(symbolic_equal, (pred, gold), HARD_TIMEOUT)
    except (guard.Timeout, guard.CallFailed):
        return False


def warm_up() -> None:
    """Fill sympy's and math-verify's first-use caches (fractions, symbols, intervals, matrices, sets)."""
    for pred, gold in WARM_UP:
        symbolic_equal(pred, gold)


def symbolic_equal(pred: str, gold: str) -> bool:
    """math-verify's comparison of two answers, stopped after SOFT_TIMEOUT where a timer can work (the
    main thread). It has no hard deadline: call `equivalent`, unless already in a grading process."""
    timer = threading.current_thread() is threading.main_thread()
    try:
        if timer:  # CPU time, not wall time: a busy machine must not turn right answers wrong
            previous = signal.signal(signal.SIGPROF, _alarm)
            signal.setitimer(signal.ITIMER_PROF, SOFT_TIMEOUT)
        try:
            gold_parsed = parse(f"\\boxed{{{gold}}}", _CONFIG, parsing_timeout=None)
            pred_parsed = parse(f"\\boxed{{{pred}}}", _CONFIG, parsing_timeout=None)
            return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None))
        finally:
            if timer:
                signal.setitimer(signal.ITIMER_PROF, 0)
                signal.signal(signal.SIGPROF, previous)
    except (_SoftTimeout, Exception):  # the timer may also fire just before it is cancelled
        return False


_shared: guard.Guard | None = None
_shared_lock = threading.Lock()


def _guard() -> guard.Guard:
    """This process's grading process for one-off calls (started on first use, stopped at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = guard.Guard(preload=[__name__], warm_up=warm_up)
            atexit.register(_shared.close)
        return _shared


class _SoftTimeout(BaseException):
    """Raised by the timer; a BaseException so that math-verify's `except Exception` lets it through."""


def _alarm(signum: int, frame: object) -> None:
    raise _SoftTimeout


def _integer(text: str) -> str:
    """An integer's canonical digits ("-1,050" -> "-1050"), as text: int() refuses > 4300 digits."""
    digits = text.lstrip("-").replace(",", "").lstrip("0") or "0"
    return "-" + digits if text.startswith("-") and digits != "0" else digits


def _decimal(answer: str) -> Decimal | None:
    """A plain decimal number with at most 6 places, exactly; None otherwise (math-verify compares more
    places after rounding, so those go to it)."""
    m = _DECIMAL.fullmatch(answer)
    return Decimal(answer) if m and len(m[1] or "") <= 6 else None


def _small(answer: str) -> bool:
    """Short and shallow enough to parse, and no number too big to write: the size guard in front of sympy."""
    if len(answer) > MAX_ANSWER_CHARS:
        return False
    depth = 0
    for m in _BRACES.finditer(answer):
        depth += 1 if m[0] == "{" else -1
        if depth > MAX_BRACE_DEPTH:
            return False
    return not _huge(answer)


def _huge(answer: str) -> bool:
    """A power tower of numbers (`9^{9^{9^9}}`) or a factorial (`(10^{9})!`) whose value has more than
    MAX_DIGITS digits: sympy would try to compute it (in C code, where only the hard deadline stops it)."""
    for m in _TOWER.finditer(answer):
        *bases, top = [int(n) for n in re.findall(r"\d+", m[0])]
        digits = math.log10(top) if top else 0.0  # log10 of the value, from the top exponent down
        for base in reversed(bases):
            exponent = 10**digits if digits < 300 else math.inf
            digits = math.log10(base) * exponent if base > 1 else 0.0
        if digits > MAX_DIGITS:
            return True
    for m in _FACTORIAL.finditer(answer):
        n = int(m[2]) if m[2] else 10 ** min(int(m[1]), 300)
        if math.lgamma(n + 1) / math.log(10) > MAX_DIGITS:  # log10(n!)
            return True
    return False
