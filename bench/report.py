"""Tables as plain Markdown, each part's JSON, and bench/RESULTS.md assembled from them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import Summary


def num(value: float, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def verdict(met: bool, value: float) -> str:
    """MET / NOT MET for a target, or NOT MEASURED when the figure is missing."""
    if value is None or math.isnan(value):
        return "NOT MEASURED"
    return "MET" if met else "NOT MET"


def spread(s: Summary, digits: int = 1) -> str:
    """`median (min-max)`, or just the value for a single run."""
    if s.n == 0:
        return "-"
    if s.n == 1 or s.min == s.max:
        return num(s.median, digits)
    return f"{num(s.median, digits)} ({num(s.min, digits)}-{num(s.max, digits)})"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def markdown(self) -> str:
        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class PartResult:
    """What one part measured: tables to read, notes that say what limits them, raw data."""

    part: int
    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    failures: int = 0

    def markdown(self) -> str:
        out = [f"## Part {self.part}: {self.title}", ""]
        for table in self.tables:
            out += [table.markdown(), ""]
        out += [f"- {note}" for note in self.notes]
        return "\n".join(out).rstrip() + "\n"

    def to_json(self, run: dict[str, Any]) -> dict[str, Any]:
        return {
            "part": self.part,
            "title": self.title,
            "run": run,
            "failures": self.failures,
            "tables": [
                {"title": t.title, "columns": t.columns, "rows": t.rows} for t in self.tables
            ],
            "notes": self.notes,
            "data": self.data,
        }


def write_part(out: Path, result: PartResult, run: dict[str, Any]) -> Path:
    path = out / "results" / f"part{result.part}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(run), indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON: {type(value).__name__}")


HEADER = """# Parlor benchmarks

Produced by `uv run python -m bench` (options: `--part N` repeatable, `--runs`, `--threads`,
`--max-tokens`, `--model PATH`, `--quick`, `--out`); the raw numbers of every run are in
`results/part<N>.json`. Every table gives the median over the runs with (min-max) beside
it. Each part says which run measured it, with the machine, its load average when the part
started, the model and the llama.cpp thread count (the same at every depth and for the peer).
"""


def _run_line(run: dict[str, Any]) -> str:
    m = run.get("machine", {})
    return (
        f"_Measured {m.get('date')} on {m.get('cpu')} ({m.get('physical_cores')} physical cores, "
        f"{m.get('logical_cpus')} CPUs, {m.get('ram_gb')} GB RAM, {m.get('os')}); "
        f"llama-cpp-python {m.get('llama_cpp_python')}, nginx {m.get('nginx')}, "
        f"commit {m.get('commit')}. Model: {run.get('model_desc')}; lm_api engine: "
        # Runs from before the engine option knew only the fifo engine.
        f"{run.get('engine', 'fifo')}; threads: {run.get('threads')}; runs: {run.get('runs')}; "
        f"answer length: "
        f"{run.get('max_tokens')} tokens; 1-minute load average when the part started: "
        f"{run.get('load_average_at_start')} on {m.get('logical_cpus')} CPUs; took "
        f"{run.get('seconds')} s{'; QUICK (smoke) form' if run.get('quick') else ''}._"
    )


def write_results_md(out: Path, preamble: str = "") -> Path:
    """RESULTS.md from every part's JSON under `out/results`, so a run of one part keeps
    the others' latest results."""
    parts = [json.loads(p.read_text()) for p in sorted((out / "results").glob("part*.json"))]
    text = [HEADER, preamble] if preamble else [HEADER]
    # The targets first, met or not, as each part judged them.
    verdicts = [n for data in parts for n in data["notes"] if n.startswith("Target:")]
    if verdicts:
        text += ["## Against the targets\n", *(f"- {v}" for v in verdicts), ""]
    for data in parts:
        text.append(f"## Part {data['part']}: {data['title']}\n")
        text.append(_run_line(data["run"]) + "\n")
        for t in data["tables"]:
            text.append(Table(t["title"], t["columns"], t["rows"]).markdown() + "\n")
        text += [f"- {n}" for n in data["notes"]]
        text.append("")
    path = out / "RESULTS.md"
    path.write_text("\n".join(text).rstrip() + "\n")
    return path
