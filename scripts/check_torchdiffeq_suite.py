"""Fail unless torchdiffeq's suite passed every subtest but the known ones (docs/engine.md).

Reads the output of ``../shared/peers/run-torchdiffeq-suite``: per-method lines
``ok|FAIL|TIME <Class.method> … subtests pass N fail M``. The only failures allowed are those in
``ALLOWED`` (at most that many per test method); no other method may fail or time out.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# test_adjoint_norm: 12 subtests swap the norm through torchdiffeq's private grad_fn.adjoint_options.
# test_min_max_step: scipy >= 1.17's LSODA ignores min_step; real torchdiffeq fails it the same way
# (191 evaluations where the test wants < 50).
# TestEventHandling.test_odeint: one explicit_adams subtest missed its 7e-2 tolerance (0.089) on an AMD
# EPYC CPU, at the previous commit too; passed on earlier machines. Open (docs/engine.md).
ALLOWED = {"TestNorms.test_adjoint_norm": 12, "TestMinMaxStep.test_min_max_step": 1,
           "TestEventHandling.test_odeint": 1}
LINE = re.compile(r"^(ok  |FAIL|TIME) (\S+)\s+[\d.]+s\s+subtests pass\s+(\d+)\s+fail\s+(\d+)")


def main(path: str) -> int:
    text = Path(path).read_text()
    problems, methods = [], 0
    for line in text.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        methods += 1
        flag, name, failed = match.group(1), match.group(2), int(match.group(4))
        if flag == "TIME" or failed > ALLOWED.get(name, 0):
            problems.append(line.strip())
    total = re.search(r"^(\d+) passed, (\d+) failed", text, re.MULTILINE)
    if methods == 0 or total is None:
        print("torchdiffeq suite: no results found (did the runner fail to start?)")
        return 1
    if problems:
        print("torchdiffeq suite: unexpected failures:\n  " + "\n  ".join(problems))
        return 1
    print(f"torchdiffeq suite: {total.group(1)} passed, {total.group(2)} failed (only the known ones)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
