"""parlor.supervisor on its own: ports, the uvicorn command line, reload, stopping."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from parlor.paths import REPO
from parlor.stack import Ports, service_specs
from parlor.supervisor import (
    POLL_S,
    ServiceExited,
    ServiceSpec,
    free_port,
    running,
    uvicorn_command,
    wait_healthy,
)

APP = """
import os

from fastapi import FastAPI

app = FastAPI()
VERSION = "{version}"


@app.get("/health")
def health() -> dict[str, object]:
    return {{"version": VERSION, "pid": os.getpid()}}
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_uvicorn_command_line() -> None:
    plain = uvicorn_command("chat_ui.main:app", 8123, access_log=False, log_level="warning")
    assert plain == [
        sys.executable, "-m", "uvicorn", "chat_ui.main:app", "--host", "127.0.0.1",
        "--port", "8123", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    assert "--reload" not in plain
    watched = uvicorn_command("chat_ui.main:app", 8123, reload_dirs=[REPO / "chat_ui"])
    assert watched[-3:] == ["--reload", "--reload-dir", str(REPO / "chat_ui")]


def test_with_reload_each_service_watches_its_own_package() -> None:
    specs = service_specs(
        Ports(1, 2, 3),
        database_url="sqlite:///x.db",
        model=Path("m.gguf"),
        token="t",
        secret_key="s" * 20,
        reload=True,
    )
    for spec in specs:
        command = list(spec.command)
        assert command.count("--reload-dir") == 1
        assert command[command.index("--reload-dir") + 1] == str(REPO / spec.name)
    plain = service_specs(
        Ports(1, 2, 3), database_url="d", model=Path("m"), token="t", secret_key="s"
    )
    assert not any("--reload" in spec.command for spec in plain)


def test_a_service_with_reload_picks_up_a_code_change_and_stops_whole(tmp_path: Path) -> None:
    module = tmp_path / "reloadme.py"
    module.write_text(APP.format(version="one"))
    port = free_port()
    spec = ServiceSpec(
        name="reloadme",
        command=uvicorn_command("reloadme:app", port, reload_dirs=[tmp_path]),
        url=f"http://127.0.0.1:{port}",
        cwd=tmp_path,
    )
    with running(spec, log=tmp_path / "reloadme.log") as service:
        first = httpx.get(spec.health_url).json()
        assert first["version"] == "one"
        # uvicorn's reloader runs the app in a worker process of its own.
        assert first["pid"] != service.pid
        module.write_text(APP.format(version="two"))
        end = time.monotonic() + 60  # a deadline for a stuck reload, not a timing check
        answer = first
        while answer["version"] != "two":
            assert time.monotonic() < end, (tmp_path / "reloadme.log").read_text()
            time.sleep(POLL_S)  # poll interval
            try:
                answer = httpx.get(spec.health_url).json()
            except httpx.HTTPError:
                continue  # between the old worker and the new one
        worker = int(answer["pid"])
        assert worker != first["pid"]
    assert not _alive(service.pid)
    assert not _alive(worker), "stopping the reloader left its worker running"


def test_wait_healthy_gives_up_as_soon_as_the_process_exits(tmp_path: Path) -> None:
    port = free_port()
    spec = ServiceSpec(
        name="crash",
        command=[sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"],
        url=f"http://127.0.0.1:{port}",
        deadline_s=600,  # never reached: the exit is noticed first
    )
    with pytest.raises(ServiceExited, match="exited with 3") as failure:
        with running(spec, log=tmp_path / "crash.log"):
            pass
    assert "bad config" in str(failure.value)


def test_wait_healthy_without_a_process_times_out() -> None:
    with pytest.raises(TimeoutError, match="not healthy"):
        wait_healthy(f"http://127.0.0.1:{free_port()}/health", deadline_s=0.2)
