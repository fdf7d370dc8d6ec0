"""``odekit report``: one markdown file with every experiment's latest results beside the thesis."""

from __future__ import annotations

import csv
import json
import platform
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import atomic
from .records import COLUMNS, Key, Labels, Value, predates_records, read_results
from .verdicts import Outcome, ThesisNumber, Verdict, format_number, number_verdict

MAX_TABLE_ROWS = 40
MAX_UNMEASURED_ROWS = 12


def latest_complete_run(runs: Path, name: str) -> Path | None:
    folder = runs / name
    if not folder.is_dir():
        return None
    for run in sorted(folder.iterdir(), reverse=True):
        try:
            if json.loads((run / "status.json").read_text()).get("state") == "complete" and not predates_records(run):
                return run
        except (FileNotFoundError, json.JSONDecodeError):
            continue
    return None


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]  # a "|" ends a cell
    return "\n".join(lines)


def _verdict_text(verdict: Verdict) -> str:
    return f"**{verdict.outcome.value}**: {verdict.reason}"


def _comparison_rows(results: dict[Key, Value], thesis: dict[Key, ThesisNumber],
                     labels: Labels) -> tuple[list[list[str]], list[Verdict], int]:
    """Each record beside the thesis number it reproduces with a verdict; the thesis numbers not measured
    (and how many)."""
    rows, verdicts = [], []

    def where(key: Key) -> list[str]:
        return [labels.model(key), labels.dataset(key), labels.x(key), labels.metric(key)]

    for key, value in results.items():
        ref = thesis.get(key)
        if ref is None:
            rows.append([*where(key), format_number(value), "—", "no thesis counterpart", ""])
            continue
        verdict = number_verdict(value, ref)
        verdicts.append(verdict)
        ref_text = format_number(ref.value) + (f" ± {format_number(ref.std)}" if ref.std is not None else "")
        rows.append([*where(key), format_number(value), ref_text, ref.source, _verdict_text(verdict)])
    unmeasured = [(key, ref) for key, ref in thesis.items() if key not in results]
    not_run = Verdict(Outcome.NOT_COMPARABLE, "this profile does not measure it; run the full profile")
    if len(unmeasured) <= MAX_UNMEASURED_ROWS:
        rows += [[*where(key), "not measured", format_number(ref.value), ref.source, _verdict_text(not_run)]
                 for key, ref in unmeasured]
    else:  # a grid of table cells the quick profile does not cover: one line, not hundreds
        tables = sorted({ref.source.split(",")[0] for _, ref in unmeasured})
        rows.append([f"{len(unmeasured)} more thesis numbers", "", "", "", "not measured", "—", ", ".join(tables),
                     _verdict_text(Verdict(Outcome.NOT_COMPARABLE, "not in this profile; run the full profile "
                                                                   "(or --set datasets=…)"))])
    return rows, verdicts, len(unmeasured)


def _claim_rows(experiment, recorded: dict[str, Any]) -> tuple[list[list[str]], list[Verdict]]:
    """Every claim the experiment declares, with the run's verdict (or why there is none)."""
    rows, verdicts = [], []
    for key, claim in experiment.claims.items():
        verdict = (Verdict.from_dict(recorded[key]) if key in recorded else
                   Verdict(Outcome.NOT_COMPARABLE, "this run recorded no verdict (it predates the check, or its "
                                                   "profile does not measure it); rerun with --fresh"))
        verdicts.append(verdict)
        rows.append([claim.source, claim.statement, _verdict_text(verdict)])
    return rows, verdicts


def _tally(verdicts: list[Verdict], unmeasured: int) -> str:
    counts = Counter(v.outcome for v in verdicts)
    plural = {Outcome.AGREES: "agree", Outcome.DIFFERS: "differ", Outcome.NOT_COMPARABLE: "not comparable"}
    parts = [f"{counts[o]} {plural[o]}" for o in Outcome if counts[o]]
    if unmeasured:
        parts.append(f"{unmeasured} thesis numbers outside this profile")
    return ", ".join(parts) or "—"


def _section(experiment, run: Path | None, report_dir: Path) -> tuple[str, str]:
    """The experiment's part of the report, and the tally of its verdicts."""
    lines = [f"## {experiment.title} (`{experiment.name}`)", "",
             f"*Thesis: {experiment.thesis_items}.* {experiment.summary}", ""]
    if run is None:
        lines += [f"Not run yet: `odekit run {experiment.name}`.", ""]
        return "\n".join(lines), "—"
    status = json.loads((run / "status.json").read_text())
    config = json.loads((run / "config.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists() else {}
    results = read_results(run)
    rel = Path(_relative(run, report_dir))
    lines += [f"Run `{rel}`: profile **{status.get('profile')}**, {status.get('seconds', '?')} s, "
              f"finished {status.get('finished', '?')}.", ""]
    settings = [[f"`{k}`", f"`{json.dumps(v)}`"] for k, v in config.items()]
    lines += ["<details><summary>configuration</summary>", "", _markdown_table(["setting", "value"], settings), "",
              "</details>", ""]
    recorded = json.loads((run / "verdicts.json").read_text()) if (run / "verdicts.json").exists() else {}
    verdicts: list[Verdict] = []
    unmeasured = 0
    if experiment.claims:
        rows, judged = _claim_rows(experiment, recorded)
        verdicts += judged
        lines += ["### The thesis's claims", "", _markdown_table(["source", "thesis claim", "verdict"], rows), ""]
    if results or experiment.thesis:
        rows, judged, unmeasured = _comparison_rows(results, experiment.thesis, experiment.labels)
        verdicts += judged
        lines += ["### Numbers beside the thesis", "",
                  _markdown_table(["model", "dataset", "at", "metric", "odekit", "thesis", "source", "verdict"], rows),
                  ""]
    for name, entry in manifest.get("figures", {}).items():
        lines += [f"![{entry.get('caption') or name}]({rel / entry['file']})", "", f"*{entry.get('caption', '')}*", ""]
    for name, entry in manifest.get("tables", {}).items():
        with open(run / entry["file"], newline="") as fh:
            header, *rows = list(csv.reader(fh))
        shown = rows[:MAX_TABLE_ROWS]
        lines += [f"### Table `{name}`", "", entry.get("caption", ""), "", _markdown_table(header, shown), ""]
        if len(rows) > len(shown):
            lines += [f"({len(rows) - len(shown)} more rows in [{entry['file']}]({rel / entry['file']}))", ""]
    return "\n".join(lines), _tally(verdicts, unmeasured)


def _relative(path: Path, start: Path) -> str:
    try:
        return str(path.resolve().relative_to(start.resolve()))
    except ValueError:
        return str(path.resolve())


def build_report(runs: Path, experiments: Iterable, out: Path | None = None,
                 shown: Mapping[str, Path] | None = None) -> Path:
    """Write the report on ``experiments`` (each :class:`~odekit.experiments.Experiment` with the run
    ``shown`` names for it, else its latest complete run under ``runs``); returns its path."""
    from .. import __version__

    out = out or runs / "report.md"
    header = [
        "# odekit reproduction report", "",
        f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by odekit {__version__} "
        f"(torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}).", "",
        "Each section shows one complete run of an experiment: the one `odekit reproduce` ran or reused, "
        "else the latest. Numbers are put beside the thesis "
        "number they reproduce (Xia 2023, *Towards Faster and More Accurate Neural ODEs*); quick-profile runs "
        "use fewer epochs, splits and seeds than the thesis, so gaps there are expected and reported as they are.",
        "",
        "Every thesis item an experiment covers gets a verdict: **agrees**, **differs**, or **not comparable** "
        "(with the reason: most often that the quick profile does not measure it).",
        "",
        "| experiment | thesis | run | verdicts |", "|---|---|---|---|",
    ]
    body, table = [], []
    for exp in experiments:
        run = (shown or {}).get(exp.name) or latest_complete_run(runs, exp.name)
        text, tally = _section(exp, run, out.parent)
        body.append(text)
        header.append(f"| `{exp.name}` | {exp.thesis_items} | {run.name if run else 'not run'} | {tally} |")
        if run is not None:
            table += _long_rows(exp, read_results(run))
    header += ["", f"Every number of these runs, beside its thesis number, is in one long-format table: "
                   f"[{RESULTS_TABLE}]({RESULTS_TABLE}).", ""]
    atomic.write_csv(out.parent / RESULTS_TABLE, [*COLUMNS, "thesis", "thesis_std", "source", "verdict"], table)
    atomic.write_text(out, "\n".join(header) + "\n\n" + "\n\n".join(body) + "\n")
    return out


RESULTS_TABLE = "results.csv"


def _long_rows(experiment, results: dict[Key, Value]) -> list[list[Any]]:
    """The run's records as rows of the long table, each with its thesis number and verdict (if any)."""
    rows = []
    for key, value in results.items():
        ref = experiment.thesis.get(key)
        verdict = number_verdict(value, ref).outcome.value if ref else ""
        rows.append([experiment.name, key.model, key.dataset, key.x, key.metric, value,
                     *((ref.value, ref.std, ref.source) if ref else ("", "", "")), verdict])
    return rows
