"""Where a response states its final answer: explicit markers in a fixed order, then math-verify's own
extraction over the response's tail. Selection and evaluation both grade through `find`, so a policy is
judged the same way wherever its answer is read. Only regular expressions run here (no sympy), on the
whole text for the markers and on at most TAIL_CHARS for the fallback, so every call is fast.
"""

from __future__ import annotations

import re

from math_verify import ExprExtractionConfig, LatexExtractionConfig
from math_verify.parser import get_extraction_regexes

from bstar_pl.prompt import split_response

TAIL_CHARS = 600  # the fallback reads this much of the end; its regexes are quadratic in the worst case
LONE_ANSWER_CHARS = 100  # a marker-less one-line response up to this long is a bare answer
MAX_JOINED = 10  # boxes read as one list answer at most
MAX_SPAN_CHARS = 1000  # a math span after an answer phrase ends within this many characters

_BOXED_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACES = re.compile(r"(?<!\\)[{}]")
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# Separators that make several boxes one answer ("\boxed{-2} and \boxed{1}"); "or" offers alternatives.
_BOX_JOIN = re.compile(r"[\s$]*(?:,|and|,\s*and|\\text\{\s*and\s*\})[\s$]*")
# A GSM8K rationale's last line "#### 72". What follows must look like an answer, not like a Markdown
# heading ("#### Step 2", "#### 1. Set up the equation"): it starts like a number and is no sentence.
_HASHES = re.compile(r"^[ \t]*####[ \t]*(?=[-+−$€£\\.\d])(?!\d+\.\s+[A-Za-z])([^\n]+)", re.MULTILINE)
# Answer phrases; the last one in the text wins: "... answer is X", "the answer to 4 + 8 is X" (what it
# answers is not the answer), "Final Answer: X", "**Answer:** X", a heading "**Final Answer**" or "Answer"
# before math on its line ("Answer $ 7 $"), GSM8K's "A: X".
_PHRASE = re.compile(
    r"\banswer(?:[ \t]+(?:to|for|of)\b[^.\n]{0,100}?)?(?:[ \t]*\*\*)?[ \t]*(?:is\b[ \t]*:?|:)(?:[ \t]*\*\*)?"
    r"|^[ \t#*]*(?:final[ \t]+)?answer\b[ \t*]*(?=$|\$|\\\[|\\\()"
    r"|^(?-i:A):",
    re.IGNORECASE | re.MULTILINE,
)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_MATH_SPAN = re.compile(r"\$\$.+?\$\$|(?<![\\$])\$[^$\n]+?(?<!\\)\$|\\\(.+?\\\)|\\\[.+?\\\]", re.DOTALL)
# A response that stops mid-sentence was probably cut by the token limit: no fallback answer for it.
_FINISHED = re.compile(r"(?:[.!?)\]}$*\"']|\\\]|\\\))$")
# Two words in a row: a sentence, not an answer alone (LaTeX commands and `\\text{...}` are no words).
_PROSE = re.compile(r"(?<![\\A-Za-z{])[A-Za-z]{2,}[ \t,]+[A-Za-z]{2,}")
_FALLBACK = get_extraction_regexes([LatexExtractionConfig(boxed_match_priority=-1), ExprExtractionConfig()])


def find(text: str) -> str | None:
    """The final answer of a response, from the first of these that gives one:

    1. the B-STaR `# Answer` block;
    2. the last complete `\\boxed{...}` (boxes joined by "and" or a comma in one sentence: a list);
    3. the last GSM8K `#### X` line;
    4. the last answer phrase: "... answer is X", "the answer to ... is X", "Final Answer: X", "Answer: X",
       a line starting
       "A: X" (GSM8K's sample format), a heading "Final Answer" or "Answer" with X after it;
    5. a response that is one short line and no sentence ("y \\leq 4"): all of it; else math-verify's
       extraction over the last TAIL_CHARS (its answer patterns, then the last math span or number),
       only for a response that ends as a finished sentence, not one cut off mid-sentence.
    None if none does. Linear in the text length, bounded by the size of the tail.
    """
    for marker in (_answer_block, _joined_boxes, _last_hashes, _last_phrase):  # in order, until one answers
        answer = marker(text)
        answer = clean(answer) if answer is not None else ""
        if answer:
            return answer
    return _fallback(text)


def last_boxed(text: str, join: bool = False) -> str | None:
    """The content of the last complete `\\boxed{...}` (balanced braces, escaped braces skipped); with
    `join`, the boxes just before it that a comma or "and" joins to it, as a comma list."""
    opens = {m.end() - 1 for m in _BOXED_OPEN.finditer(text)}
    if not opens:
        return None
    stack: list[int] = []
    boxes: list[tuple[int, int]] = []  # (open brace, close brace) of every complete box
    for m in _BRACES.finditer(text):
        if m[0] == "{":
            stack.append(m.start())
        elif stack:
            start = stack.pop()
            if start in opens:
                boxes.append((start, m.start()))
    if not boxes:
        return None
    boxes.sort()
    chosen, i = [boxes[-1]], len(boxes) - 1
    while join and len(chosen) < MAX_JOINED and i > 0:
        i -= 1
        start, end = boxes[i]
        if end > chosen[0][0]:  # a box around the chosen one
            continue
        opener = _BOXED_OPEN.search(text, end, chosen[0][0] + 1)
        if opener is None or not _BOX_JOIN.fullmatch(text, end + 1, opener.start()):
            break
        chosen.insert(0, (start, end))
    return ", ".join(text[start + 1 : end] for start, end in chosen)


def clean(answer: str) -> str:
    """Strip what surrounds an answer: space, bold, a final full stop, math delimiters, a `\\boxed{}`
    or a brace group around all of it, a currency `$`."""
    answer = answer.strip().removesuffix(".").strip().strip("*").strip().removesuffix(".").strip()
    for left, right in _DELIMITERS:
        if len(answer) > len(left) + len(right) and answer.startswith(left) and answer.endswith(right):
            answer = answer[len(left) : -len(right)].strip().removesuffix(".").strip()
            break
    for opener in ("\\boxed{", "{"):  # a box or a brace group around all of it (braces only group)
        if answer.startswith(opener) and _closing_brace(answer, len(opener) - 1) == len(answer) - 1:
            answer = answer[len(opener) : -1].strip()
    # A lone `$` left over is a currency sign ("$18"), not math mode.
    return re.sub(r"(?<!\\)\$", "", answer).strip()


def _answer_block(text: str) -> str | None:
    _, block = split_response(text)
    return block.split("\n\n", 1)[0] if block is not None else None


def _joined_boxes(text: str) -> str | None:
    return last_boxed(text, join=True)


def _last_hashes(text: str) -> str | None:
    matches = [m for m in _HASHES.finditer(text) if not _PROSE.search(m[1])]
    return matches[-1][1] if matches else None


def _last_phrase(text: str) -> str | None:
    """What the last answer phrase states: a math span right after it, else its sentence; when that
    sentence says "... is X" ("Final Answer: the area of the square is 42"), X or its last math span."""
    # GSM8K's "A: n" is its last line; elsewhere "A:" labels a point or a choice.
    last_line = text.rstrip().rfind("\n") + 1
    matches = [m for m in _PHRASE.finditer(text) if m[0] != "A:" or m.start() >= last_line]
    if not matches:
        return None
    rest = text[matches[-1].end() :].lstrip(" \t*")
    if rest.startswith("\n"):  # a heading: the answer is on the next line that has one
        rest = rest.lstrip()
    span = _leading_span(rest)
    if span is not None:
        return span
    sentence = _SENTENCE_END.split(rest.split("\n", 1)[0][:MAX_SPAN_CHARS], maxsplit=1)[0]
    _, is_, stated = sentence.rpartition(" is ")
    stated = stated if is_ and stated.strip() else sentence
    spans = list(_MATH_SPAN.finditer(stated))
    return spans[-1][0] if spans and _leading_span(stated) is None else stated


def _leading_span(text: str) -> str | None:
    """The math span `text` starts with, if it closes soon (inline spans on the same line)."""
    for left, right in _DELIMITERS:
        if text.startswith(left):
            end = text.find(right, len(left), MAX_SPAN_CHARS)
            if end > 0 and (left in ("$$", "\\[") or "\n" not in text[:end]):
                return text[: end + len(right)]
            return None
    return None


def _fallback(text: str) -> str | None:
    """math-verify's extraction patterns over the tail, in its priority order, the rightmost match of
    the first priority that matches (as math-verify tries them); the matched text, not yet parsed."""
    text = text.strip()
    lone = "\n" not in text and len(text) <= LONE_ANSWER_CHARS and not _PROSE.search(text)
    if lone:  # and no words around its math ("Therefore $x = 5$." is a sentence)
        spans = _MATH_SPAN.findall(text)
        lone = not spans or spans == [text.removesuffix(".")]
    if lone and text.count("=") < 2:  # the answer alone: "y \leq 4", "18 cm"
        return clean(text) or None
    if not (lone or _FINISHED.search(text[-2:])):
        return None
    tail = _tail(text)
    best: dict[int, tuple[int, int, re.Match[str]]] = {}
    for patterns, _config in _FALLBACK:
        for pattern, priority in patterns:
            for m in pattern.finditer(tail):
                key = (m.end(), -m.start(), m)
                if priority not in best or key[:2] > best[priority][:2]:
                    best[priority] = key
    for priority in sorted(best):
        answer = _matched(best[priority][2])
        if answer:
            return clean(answer) or None
    return None


def _tail(text: str) -> str:
    """The last TAIL_CHARS of `text`, started where no inline math span is cut in two."""
    if len(text) <= TAIL_CHARS:
        return text
    start = len(text) - TAIL_CHARS
    line_start = text.rfind("\n", 0, start) + 1
    if len(re.findall(r"(?<!\\)\$", text[line_start:start])) % 2:  # inside `$...$`: start after it
        close = text.find("$", start)
        start = close + 1 if close >= 0 else start
    return text[start:]


def _matched(m: re.Match[str]) -> str:
    """The answer text of a math-verify pattern's match: its LaTeX groups (several joined by "and" or
    commas become a list), else its number without thousands separators, else its expression."""
    groups = {k: v for k, v in m.groupdict().items() if v}
    latex = [(k, v) for k, v in groups.items() if "_latex" in k]
    if latex:
        parts = []
        for name, value in latex:
            percent = groups.get(name.split("_", 1)[0] + "_percent")
            parts.append(value.strip() + ("\\%" if percent else ""))
        return ", ".join(parts)
    integer = next((v for k, v in groups.items() if k.startswith("integer")), "")
    decimal = next((v for k, v in groups.items() if k.startswith("decimal")), "")
    if integer or decimal:
        number = integer.replace(",", "").replace(" ", "") + decimal.replace(",", ".")
        return number + ("\\%" if groups.get("percent") else "")
    return groups.get("expr", "").strip()


def _closing_brace(text: str, start: int) -> int | None:
    """The index of the brace closing the one at `start` (escaped braces skipped), None if unclosed."""
    depth = 0
    for m in _BRACES.finditer(text, start):
        depth += 1 if m[0] == "{" else -1
        if depth == 0:
            return m.start()
    return None
