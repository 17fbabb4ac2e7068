"""PRM data files: prm-v4 rows `{input, output: [steps], label: [0/1 ...]}` (the reference's format) and
Math-Shepherd rows (`... ки` step tags, `+`/`-` labels), read row by row with `path:line` errors, written atomically.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from bstar_pl.atomic import atomic_path
from bstar_pl.records import PRMExample, RecordError, from_dict
from bstar_pl.tasks.loading import read_rows

TAG = "ки"  # Math-Shepherd's step tag in `input`; `label` holds "+" or "-" in its place
FIRST_STEP = re.compile(r"[Ss]tep 1:")


def read_prm(path: str | os.PathLike[str], soft_labels: bool = False) -> list[PRMExample]:
    """PRM examples from a JSON-lines file (or a `.json` list) of prm-v4 rows `{input, output: [steps], label}` or
    Math-Shepherd rows `{input, label, task}`, told apart row by row. Labels must be 0 or 1 unless `soft_labels`
    (then any number in [0, 1]); a malformed row fails with `path:line: what is wrong`."""
    examples = []
    for row in read_rows(path):
        where, row = row.where, row.data
        try:
            if isinstance(row, dict) and isinstance(row.get("label"), str):
                example = from_shepherd(row)
            else:
                example = from_dict(PRMExample, row, ignore_unknown=True)
            bad = [i for i, v in enumerate(example.label) if v not in (0, 1)]
            if bad and not soft_labels:
                raise ValueError(
                    f"field 'label[{bad[0]}]': expected 0 or 1, got {example.label[bad[0]]} (soft labels need "
                    "soft_labels=True)"
                )
        except (TypeError, ValueError) as e:
            raise RecordError(f"{where}: {e}") from None
        examples.append(example)
    return examples


def write_prm(path: str | os.PathLike[str], examples: list[PRMExample]) -> int:
    """Write prm-v4 rows atomically; labels that are 0 or 1 are written as integers, as the reference reads them."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for e in examples:
            label = [int(v) if v in (0, 1) else v for v in e.label]
            f.write(json.dumps({"input": e.input, "output": e.output, "label": label}, ensure_ascii=False) + "\n")
    return len(examples)


def from_shepherd(row: dict[str, Any]) -> PRMExample:
    """A Math-Shepherd row as a prm-v4 example: `input` is the question, then steps each ending in " ки";
    `label` is the same text with "+" (the step can still reach the answer) or "-" in place of each tag.
    The question is what precedes "Step 1:"; steps keep their text ("Step k: ...") as it is, stripped."""
    text, tagged = row.get("input"), row["label"]
    if not isinstance(text, str):
        raise ValueError("field 'input': expected str")
    parts = text.split(TAG)
    if len(parts) < 2:
        raise ValueError(f"field 'input': no step tag {TAG!r}")
    labels, pos = [], len(parts[0])
    if tagged[:pos] != parts[0]:
        raise ValueError("fields 'input' and 'label' differ before the first step tag")
    for k, part in enumerate(parts[1:], start=1):
        mark = tagged[pos : pos + 1]
        if mark not in ("+", "-"):
            raise ValueError(f"field 'label': expected '+' or '-' at step tag {k}, got {mark!r}")
        labels.append(1.0 if mark == "+" else 0.0)
        if tagged[pos + 1 : pos + 1 + len(part)] != part:
            raise ValueError(f"fields 'input' and 'label' differ after step tag {k}")
        pos += 1 + len(part)
    if pos != len(tagged) or parts[-1].strip():
        raise ValueError("text after the last step tag")
    first = FIRST_STEP.search(parts[0])
    if first is None:
        raise ValueError("field 'input': no 'Step 1:' before the first step tag")
    steps = [s.strip() for s in [parts[0][first.start() :], *parts[1:-1]]]
    if not all(steps):
        raise ValueError("field 'input': an empty step")
    return PRMExample(input=parts[0][: first.start()].strip(), output=steps, label=labels)
