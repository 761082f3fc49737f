"""Run the fault scenarios of tests/faults N times and write bench/RELIABILITY.md, a table
"fault | tried | held".

    uv run python -m bench.reliability --runs 5
    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
        uv run python -m bench.reliability --runs 5

A scenario "held" when everything it checks held: the page was told the truth (the text
shown, the end and its reason), the database holds every question and the answer's final
text with its true status, and the visitor got no response >= 500. The scenarios run as
pytest runs them (one stack, each fault then the services healed); this script only
repeats them and counts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from bench.machine import describe

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "RELIABILITY.md"

# Each scenario of tests/faults/test_faults.py, in words.
FAULTS = {
    "test_model_server_killed_mid_answer": "lm_api killed (SIGKILL) mid-answer",
    "test_storage_killed_mid_answer_and_back_after_it_ends": (
        "db_api killed mid-answer, back after the answer ended"
    ),
    "test_slow_storage_keeps_what_was_shown": (
        "db_api traffic delayed 0-300 ms each way (3 chats x 2 answers at once)"
    ),
    "test_database_connections_terminated_mid_answer": (
        "PostgreSQL connections terminated (pg_terminate_backend) mid-answer"
    ),
    "test_chat_ui_killed_mid_answer": "chat_ui killed (SIGKILL) mid-answer, restarted",
    "test_browser_disconnects_mid_answer": "browser disconnects mid-answer",
    "test_model_server_stalls_mid_answer": "lm_api frozen (SIGSTOP) mid-answer",
    "test_model_output_with_nul_and_lone_surrogates": (
        "model output with NUL bytes and lone surrogates"
    ),
}


def run_faults(runs: int, junit: Path) -> int:
    env = {**os.environ, "PARLOR_FAULT_RUNS": str(runs)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests/faults",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rs",
        f"--junitxml={junit}",
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode


def tally(junit: Path) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {name: Counter() for name in FAULTS}
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314 (our own file)
        name = case.get("name", "").split("[", 1)[0]
        if name not in counts:
            continue
        if case.find("skipped") is not None:
            counts[name]["skipped"] += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            counts[name]["tried"] += 1
        else:
            counts[name]["tried"] += 1
            counts[name]["held"] += 1
    return counts


def write(counts: dict[str, Counter[str]], runs: int, command: str) -> str:
    machine = describe()
    database = "PostgreSQL" if os.environ.get("TEST_DATABASE_URL") else "SQLite"
    lines = [
        "# Reliability under faults",
        "",
        f"Produced by `{command}` on {machine['date']}: the scenarios of",
        "`tests/faults/test_faults.py`, each run "
        f"{runs} time{'s' if runs != 1 else ''}, against the real",
        f"services (db_api on {database}, lm_api on the `small` synthetic model, chat_ui, nginx).",
        "A try *held* when everything it checks held: the page showed the answer's text and",
        "its true end (reason code included), the database holds the question and the",
        "answer's final text with its true status, and no response to the visitor was >= 500.",
        "",
        "| fault | tried | held |",
        "|---|---|---|",
    ]
    for name, label in FAULTS.items():
        c = counts[name]
        if c["tried"] == 0 and c["skipped"]:
            lines.append(f"| {label} | 0 | skipped (needs PostgreSQL: TEST_DATABASE_URL) |")
        else:
            lines.append(f"| {label} | {c['tried']} | {c['held']} |")
    total_tried = sum(c["tried"] for c in counts.values())
    total_held = sum(c["held"] for c in counts.values())
    lines += [
        f"| **all** | **{total_tried}** | **{total_held}** |",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, "
        f"{machine['ram_gb']} GB, {machine['os']}, Python {machine['python']}, "
        f"commit {machine['commit']}.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="tries of each scenario")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    command = "uv run python -m bench.reliability" + (
        f" --runs {args.runs}" if args.runs != 3 else ""
    )
    if os.environ.get("TEST_DATABASE_URL"):
        command = f"TEST_DATABASE_URL=... {command}"
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "faults.xml"
        run_faults(args.runs, junit)
        if not junit.exists():
            print("pytest wrote no report", file=sys.stderr)
            return 2
        counts = tally(junit)
    text = write(counts, args.runs, command)
    args.out.write_text(text)
    print(text)
    return 0 if all(c["tried"] == c["held"] for c in counts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
