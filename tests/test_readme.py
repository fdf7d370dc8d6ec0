"""The README's quick start runs as written."""

import re
from pathlib import Path


def test_quick_start_runs(capsys):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (code,) = re.findall(r"## Quick start\n\n```python\n(.*?)```", readme, flags=re.S)
    exec(compile(code, "README quick start", "exec"), {})
    nfe, nfe_backward, accepted, rejected = map(int, capsys.readouterr().out.split())
    assert nfe > 0 and nfe_backward > 0 and accepted > 0 and rejected >= 0
