"""The benchmark suite in its tiniest form, so it cannot rot: every part runs end to end
(toy model, one run, a few tokens, tiny pages) and writes the tables and JSON it promises.
No speed is asserted: only that every row is there and nothing failed. The llama-server
peer takes part when it has been built (bench/work/), and is skipped with a note when not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import main
from bench.llama_server import BINARY
from bench.pages import parse_wrk
from parlor.nginx import nginx_binary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    out = tmp_path_factory.mktemp("bench")
    status = main(["--quick", "--out", str(out)])
    return status, out


def _part(out: Path, number: int) -> dict[str, Any]:
    part: dict[str, Any] = json.loads((out / "results" / f"part{number}.json").read_text())
    return part


def _column(table: dict[str, Any], name: str) -> list[str]:
    index = table["columns"].index(name)
    return [str(row[index]) for row in table["rows"]]


def test_every_part_ran_without_failures(quick_run: tuple[int, Path]) -> None:
    status, out = quick_run
    assert status == 0
    for number in range(1, 7):
        data = _part(out, number)
        assert data["failures"] == 0, data["notes"]
        assert data["run"]["quick"] is True
        assert data["run"]["machine"]["llama_cpp_python"] != "not installed"


def test_results_md_names_the_machine_and_every_part(quick_run: tuple[int, Path]) -> None:
    _, out = quick_run
    text = (out / "RESULTS.md").read_text()
    for number in range(1, 7):
        assert f"## Part {number}:" in text
    for fact in ("physical cores", "llama-cpp-python", "commit", "threads"):
        assert fact in text


def test_part1_has_three_depths_with_numbers(quick_run: tuple[int, Path]) -> None:
    _, out = quick_run
    table = _part(out, 1)["tables"][0]
    depths = _column(table, "depth")
    assert depths == [
        "in-process (llama-cpp-python)",
        "lm_api over HTTP",
        "full stack (nginx → chat_ui SSE → lm_api)",
    ]
    assert all(ttft != "-" for ttft in _column(table, "TTFT ms"))
    # Decode speed needs two timed tokens; in-process and lm_api stream each token.
    assert all(tps != "-" for tps in _column(table, "decode tok/s")[:2])


# llama-server is built once by `python -m bench.llama_server` (never by the smoke form).
LLAMA_SERVER = BINARY.is_file()


def test_part2_covers_every_server_at_each_level(quick_run: tuple[int, Path]) -> None:
    _, out = quick_run
    data = _part(out, 2)
    table = data["tables"][0]
    pairs = list(zip(_column(table, "server"), _column(table, "chats"), strict=True))
    servers = ["Parlor (full stack)", "lm_api"]
    servers += ["llama-server"] if LLAMA_SERVER else []
    servers += ["llama_cpp.server (peer)"]
    assert pairs == [(s, n) for s in servers for n in ("1", "2")] + [
        ("in-process (llama-cpp-python)", "1")
    ]
    assert set(_column(table, "failures")) == {"0"}
    assert all(v != "-" for v in _column(table, "aggregate tok/s"))
    titles = [t["title"] for t in data["tables"]]
    lone = data["tables"][titles.index("A lone stream: lm_api against llama-cpp-python in-process")]
    assert _column(lone, "")[:2] == ["in-process (llama-cpp-python)", "lm_api"]
    assert any(n.startswith("Target: lm_api's lone stream") for n in data["notes"])
    if LLAMA_SERVER:
        versus = data["tables"][1]
        assert _column(versus, "chats") == ["1", "2"]
        assert all(v != "-" for v in _column(versus, "aggregate lm_api / llama-server"))
    else:
        assert any("llama-server is not built" in n for n in data["notes"])


def test_part6_times_the_streams_around_a_long_prompt(quick_run: tuple[int, Path]) -> None:
    _, out = quick_run
    data = _part(out, 6)
    table = data["tables"][0]
    assert _column(table, "server") == ["lm_api"] + (["llama-server"] if LLAMA_SERVER else [])
    assert set(_column(table, "failures")) == {"0"}
    for column in ("worst gap ms", "long prompt's first token ms", "same prompt alone ms"):
        assert all(v != "-" for v in _column(table, column))
    assert data["data"]["long_prompt_tokens"] > 100
    assert any(n.startswith("Target: running answers' worst gap") for n in data["notes"])


def test_part3_times_each_marked_turn(quick_run: tuple[int, Path]) -> None:
    _, out = quick_run
    table = _part(out, 3)["tables"][0]
    assert _column(table, "turn") == [
        "1 (full stack)",
        "2 (full stack)",
        "3 (full stack)",
        "every turn 2-3 (full stack)",
        "3, its prompt straight to lm_api, nothing cached",
        "3, its prompt straight to lm_api, all cached",
    ]
    assert all(v != "-" for v in _column(table, "TTFT ms"))


def test_part4_pairs_each_page_with_a_static_file_of_its_size(
    quick_run: tuple[int, Path],
) -> None:
    _, out = quick_run
    table = _part(out, 4)["tables"][0]
    pages = _column(table, "page")
    sizes = _column(table, "bytes")
    assert pages[0::2] == ["chat page, 4 messages", "chat page, 10 messages", "sidebar, 5 chats"]
    assert all(p.startswith("static file, same size") for p in pages[1::2])
    assert sizes[0::2] == sizes[1::2]
    assert set(_column(table, "errors")) == {"0"}
    # Issue 14's ratios, each with its verdict.
    ratios = _part(out, 4)["tables"][1]
    assert len(ratios["rows"]) == 4  # 10 vs 4 messages; each page vs its static file
    assert all(row[-1] in ("MET", "NOT MET") for row in ratios["rows"])


def test_part5_reports_every_service_idle_and_under_load(quick_run: tuple[int, Path]) -> None:
    _, out = quick_run
    rss = _part(out, 5)["data"]["rss_mb"]
    for name in ("nginx", "chat_ui", "db_api", "lm_api", "llama_cpp.server (peer)"):
        assert rss[name]["peak_mb"] > 0
    if LLAMA_SERVER:
        assert rss["llama-server"]["peak_mb"] > 0
    for name in ("nginx", "chat_ui", "db_api", "lm_api"):
        assert rss[name]["idle_mb"] > 0


WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:1/x
  2 threads and 4 connections
  Latency Distribution
     50%  210.00us
     75%  300.00us
     90%    1.10ms
     99%    2.50s
  15207 requests in 1.00s, 120.03MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  15207.00
"""


def test_wrk_output_is_read_in_milliseconds() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.rps == 15207.0
    assert result.p50_ms == pytest.approx(0.21)
    assert result.p99_ms == pytest.approx(2500.0)
    assert result.errors == 3


def test_wrk_output_without_a_latency_table_is_an_error() -> None:
    with pytest.raises(ValueError, match="unreadable"):
        parse_wrk("Requests/sec: 12\n")
