"""``odekit report``: one markdown file with every experiment's latest results beside the thesis."""

from __future__ import annotations

import csv
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import atomic

MAX_TABLE_ROWS = 40
MAX_UNMEASURED_ROWS = 12


def latest_complete_run(runs: Path, name: str) -> Path | None:
    folder = runs / name
    if not folder.is_dir():
        return None
    for run in sorted(folder.iterdir(), reverse=True):
        try:
            if json.loads((run / "status.json").read_text()).get("state") == "complete":
                return run
        except (FileNotFoundError, json.JSONDecodeError):
            continue
    return None


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _comparison_rows(metrics: dict[str, Any], thesis: dict) -> list[list[str]]:
    """Each metric beside the thesis number it reproduces, and thesis numbers we have not measured."""
    rows = []
    for key, value in metrics.items():
        ref = thesis.get(key)
        if ref is None:
            rows.append([key, _format(value), "—", "no thesis counterpart", ""])
            continue
        ref_text = _format(ref.value) + (f" ± {_format(ref.std)}" if ref.std is not None else "")
        verdict = ""
        if isinstance(value, (int, float)):
            gap = value - ref.value
            if ref.std is not None:
                within = abs(gap) <= ref.std
                verdict = "within ±1 std" if within else f"off by {_format(gap)} ({_format(abs(gap) / ref.std)} std)"
            elif ref.higher_is_better is not None and ref.value:
                ratio = value / ref.value
                better = ratio >= 1 if ref.higher_is_better else ratio <= 1
                verdict = f"{'better' if better else 'worse'}: {_format(ratio)}× the thesis's value"
            else:
                verdict = f"difference {_format(gap)}"
        rows.append([key, _format(value), ref_text, ref.source, verdict])
    unmeasured = [(key, ref) for key, ref in thesis.items() if key not in metrics]
    if len(unmeasured) <= MAX_UNMEASURED_ROWS:
        rows += [[key, "not measured", _format(ref.value), ref.source, "run the full profile"] for key, ref in unmeasured]
    else:  # a grid of table cells the quick profile does not cover: one line, not hundreds
        tables = sorted({ref.source.split(",")[0] for _, ref in unmeasured})
        rows.append([f"{len(unmeasured)} more thesis numbers", "not measured", "—", ", ".join(tables),
                     "run the full profile (or --set datasets=…)"])
    return rows


def _section(experiment, runs: Path, report_dir: Path) -> str:
    lines = [f"## {experiment.title} (`{experiment.name}`)", "",
             f"*Thesis: {experiment.thesis_items}.* {experiment.summary}", ""]
    run = latest_complete_run(runs, experiment.name)
    if run is None:
        lines += [f"Not run yet: `odekit run {experiment.name}`.", ""]
        return "\n".join(lines)
    status = json.loads((run / "status.json").read_text())
    config = json.loads((run / "config.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists() else {}
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    rel = Path(_relative(run, report_dir))
    lines += [f"Run `{rel}`: profile **{status.get('profile')}**, {status.get('seconds', '?')} s, "
              f"finished {status.get('finished', '?')}.", ""]
    settings = [[f"`{k}`", f"`{json.dumps(v)}`"] for k, v in config.items()]
    lines += ["<details><summary>configuration</summary>", "", _markdown_table(["setting", "value"], settings), "",
              "</details>", ""]
    if metrics or experiment.thesis:
        lines += ["### Numbers beside the thesis", "",
                  _markdown_table(["metric", "odekit", "thesis", "source", "comparison"],
                                  _comparison_rows(metrics, experiment.thesis)), ""]
    for name, entry in manifest.get("figures", {}).items():
        lines += [f"![{entry.get('caption') or name}]({rel / entry['file']})", "", f"*{entry.get('caption', '')}*", ""]
    for name, entry in manifest.get("tables", {}).items():
        with open(run / entry["file"], newline="") as fh:
            header, *rows = list(csv.reader(fh))
        shown = rows[:MAX_TABLE_ROWS]
        lines += [f"### Table `{name}`", "", entry.get("caption", ""), "", _markdown_table(header, shown), ""]
        if len(rows) > len(shown):
            lines += [f"({len(rows) - len(shown)} more rows in [{entry['file']}]({rel / entry['file']}))", ""]
    return "\n".join(lines)


def _relative(path: Path, start: Path) -> str:
    try:
        return str(path.resolve().relative_to(start.resolve()))
    except ValueError:
        return str(path.resolve())


def build_report(runs: Path, out: Path | None = None) -> Path:
    """Write the report for every registered experiment; returns its path."""
    from .. import __version__
    from ..experiments import EXPERIMENTS

    out = out or runs / "report.md"
    header = [
        "# odekit reproduction report", "",
        f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by odekit {__version__} "
        f"(torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}).", "",
        "Each section shows the latest complete run of one experiment. Numbers are put beside the thesis "
        "number they reproduce (Xia 2023, *Towards Faster and More Accurate Neural ODEs*); quick-profile runs "
        "use fewer epochs, splits and seeds than the thesis, so gaps there are expected and reported as they are.",
        "",
        "| experiment | thesis | latest run |", "|---|---|---|",
    ]
    for exp in EXPERIMENTS.values():
        run = latest_complete_run(runs, exp.name)
        header.append(f"| `{exp.name}` | {exp.thesis_items} | {run.name if run else 'not run'} |")
    body = [_section(exp, runs, out.parent) for exp in EXPERIMENTS.values()]
    atomic.write_text(out, "\n".join(header) + "\n\n" + "\n\n".join(body) + "\n")
    return out
