"""`parlor up` for real: the command as a subprocess, the chat through the address it prints,
a killed service restarted, then Ctrl-C (SIGINT), and every process it started must be gone."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from parlor.nginx import nginx_binary
from tests.stack.visitor import Visitor
from tests.support import REPO, free_port, wait_healthy

pytestmark = pytest.mark.slow

READY = re.compile(r"Parlor is ready: (http://127\.0\.0\.1:\d+)")
STARTED = re.compile(r"started (\w+) \(pid (\d+)\)")
# Deadlines for a stuck command, not timing assertions.
START_DEADLINE_S = 180.0
STOP_DEADLINE_S = 60.0


@dataclass
class Up:
    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """Read output lines until one matches `pattern` (noting child pids on the way)."""
        end = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(0.1, end - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if started := STARTED.search(line):
                self.pids[started.group(1)] = int(started.group(2))
            if match := pattern.search(line):
                return match
            if self.proc.poll() is not None and self.lines.empty():
                break
        raise AssertionError(f"no line matching {pattern.pattern}:\n" + "\n".join(self.seen))

    def finish(self) -> int:
        code = self.proc.wait(timeout=STOP_DEADLINE_S)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def parlor(*args: str, cwd: Path, **extra_env: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **extra_env}
    return subprocess.Popen(
        [sys.executable, "-m", "parlor.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextmanager
def running(proc: subprocess.Popen[str]) -> Iterator[Up]:
    up = Up(proc)
    try:
        yield up
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in up.pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def up_demo(tmp_path: Path) -> Iterator[Up]:
    port = free_port()
    data = tmp_path / "data"
    with running(
        parlor(
            "up",
            "--demo",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            cwd=tmp_path,
            CHAT_UI_MAX_TOKENS="8",  # short answers: the demo model is slow on a busy CPU
        )
    ) as up:
        yield up


@pytest.fixture
def up_fresh_clone_offline(tmp_path: Path) -> Iterator[Up]:
    """`parlor up` with no model and no way to download one (a closed local port)."""
    port = free_port()
    data = tmp_path / "data"
    unreachable = f"http://127.0.0.1:{free_port()}/models/model.gguf"
    with running(
        parlor(
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            cwd=tmp_path,
            PARLOR_MODEL_URL=unreachable,
        )
    ) as up:
        yield up


def test_up_on_a_fresh_clone_offline_serves_the_demo_and_stops_on_ctrl_c(
    up_fresh_clone_offline: Up, tmp_path: Path
) -> None:
    up = up_fresh_clone_offline
    url = up.wait_for(READY).group(1)
    # No model and no internet: it tried, said how to get one, and fell back to the demo.
    assert any("could not download the model" in line for line in up.seen)
    assert any("uv run parlor download" in line for line in up.seen)
    expected = {"db_api", "lm_api", "chat_ui"} | ({"nginx"} if nginx_binary() else set())
    assert set(up.pids) == expected
    wait_healthy(url + "/health", deadline_s=30)
    if nginx_binary():
        assert httpx.get(url + "/health").headers["server"] == "nginx"

    visitor = Visitor(url)
    try:
        visitor.login("Linus")
        assert visitor.new_chat()
    finally:
        visitor.close()

    data = tmp_path / "data"
    assert (data / "models" / "demo.gguf").is_file()
    assert (data / "parlor.db").is_file()
    assert (data / "secret_key").stat().st_mode & 0o777 == 0o600

    up.proc.send_signal(signal.SIGINT)
    assert up.finish() == 0, "\n".join(up.seen)
    assert not [name for name, pid in up.pids.items() if alive(pid)]
    assert any("all stopped" in line for line in up.seen)
    # Each service's own lines are shown under its name.
    assert any(line.startswith("lm_api   | ") for line in up.seen)


def _answer(visitor: Visitor, chat_id: str, content: str) -> str:
    """Send `content` and read its answer's stream to the end; the final event's data."""
    message_id = visitor.send(chat_id, content)
    with visitor.stream(chat_id, message_id) as events:
        for event in events:
            if event.event == "done":
                return event.data
    raise AssertionError("the stream ended without a done event")


@pytest.mark.parametrize("victim", ["chat_ui", "lm_api"])
def test_up_restarts_a_service_that_dies_and_the_chat_goes_on(up_demo: Up, victim: str) -> None:
    """Like compose's `restart:`: the dead service comes back healthy on its port (no
    "address in use" from the connections it left in TIME_WAIT), the others keep serving,
    and only Ctrl-C stops everything."""
    up = up_demo
    url = up.wait_for(READY).group(1)
    visitor = Visitor(url)
    try:
        visitor.login("Grace")
        chat_id = visitor.new_chat()
        assert 'data-status="complete"' in _answer(visitor, chat_id, "before")
        before = dict(up.pids)

        os.kill(before[victim], signal.SIGKILL)
        up.wait_for(re.compile(rf"{victim} was killed by SIGKILL .*: restarting it in"))
        up.wait_for(re.compile(rf"{victim} is healthy again"))
        assert up.pids[victim] != before[victim]
        others = {name: pid for name, pid in before.items() if name != victim}
        assert {name: up.pids[name] for name in others} == others
        assert all(alive(pid) for pid in others.values())

        # The same person, the same login, the same chat: it goes on.
        assert 'data-status="complete"' in _answer(visitor, chat_id, "after")
        assert "Grace" in visitor.get_page(f"/chats/{chat_id}").text
    finally:
        visitor.close()

    up.proc.send_signal(signal.SIGINT)
    assert up.finish() == 0, "\n".join(up.seen)
    assert not [pid for pid in (*before.values(), *up.pids.values()) if alive(pid)]
    assert not any("address already in use" in line.lower() for line in up.seen)


def test_up_without_a_model_says_how_to_get_one(tmp_path: Path) -> None:
    proc = parlor(
        "up",
        "--no-download",
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "data"),
        cwd=tmp_path,
    )
    out, _ = proc.communicate(timeout=STOP_DEADLINE_S)
    assert proc.returncode == 2
    assert "uv run parlor download" in out
    assert "--demo" in out
    assert "started" not in out  # nothing was left running


def test_up_refuses_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = parlor(
            "up", "--demo", "--port", str(port), "--data-dir", str(tmp_path), cwd=tmp_path
        )
        out, _ = proc.communicate(timeout=STOP_DEADLINE_S)
    assert proc.returncode == 2
    assert f"port {port} is in use" in out


def test_cli_dispatches_synth(tmp_path: Path) -> None:
    from parlor.cli import main

    out = tmp_path / "t.gguf"
    assert main(["synth", "--preset", "toy", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"GGUF"


def test_cli_migrate_creates_the_schema(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from parlor.cli import main

    url = f"sqlite:///{tmp_path / 'sub' / 'parlor.db'}"
    assert main(["migrate", "--database-url", url]) == 0
    tables = set(sa.inspect(sa.create_engine(url)).get_table_names())
    assert {"chats", "messages"} <= tables
