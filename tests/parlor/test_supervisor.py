"""parlor.supervisor on its own: ports, the uvicorn command line, reload, stopping."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from parlor.paths import REPO
from parlor.stack import Ports, service_specs
from parlor.supervisor import (
    POLL_S,
    Backoff,
    ServiceExited,
    ServiceSpec,
    Supervisor,
    free_port,
    port_is_free,
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


def test_with_reload_each_service_watches_its_own_and_shared_packages() -> None:
    specs = service_specs(
        Ports(1, 2, 3),
        database_url="sqlite:///x.db",
        model=Path("m.gguf"),
        token="t",
        secret_key="s" * 20,
        reload=True,
    )
    shared = {"db_api": ["db_contract"], "lm_api": [], "chat_ui": ["db_contract"]}
    for spec in specs:
        command = list(spec.command)
        watched = [command[i + 1] for i, arg in enumerate(command) if arg == "--reload-dir"]
        assert watched == [str(REPO / p) for p in (spec.name, *shared[spec.name])]
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


def test_a_port_in_time_wait_is_free_as_uvicorn_sees_it() -> None:
    """A restart reuses its port at once: connections the dead process closed linger in
    TIME_WAIT for a minute, and only a bind without SO_REUSEADDR is refused for them."""
    # A server's socket as uvicorn (asyncio) and nginx make it: SO_REUSEADDR, which the
    # connections it accepts inherit.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end goes to TIME_WAIT
    client.recv(1)  # the server's FIN
    client.close()
    listener.close()

    plain = socket.socket()
    with pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what a naive "is the port free?" check does
    plain.close()
    assert port_is_free(port)
    # ... and so does a real server, which is what the check stands for.
    with socket.create_server(("127.0.0.1", port)) as server:
        assert server.getsockname()[1] == port
    with socket.create_server(("127.0.0.1", port)):
        assert not port_is_free(port)  # a listener is not free


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first_s=0.5, most_s=30.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def _uvicorn_spec(name: str, tmp_path: Path) -> ServiceSpec:
    (tmp_path / f"{name}.py").write_text(APP.format(version=name))
    port = free_port()
    return ServiceSpec(
        name=name,
        command=uvicorn_command(f"{name}:app", port, log_level="warning"),
        url=f"http://127.0.0.1:{port}",
        port=port,
        cwd=tmp_path,
    )


@contextmanager
def _watching(supervisor: Supervisor) -> Iterator[None]:
    watcher = threading.Thread(target=supervisor.watch, kwargs={"tick_s": 0.05})
    watcher.start()
    try:
        yield
    finally:
        supervisor.stopping.set()
        watcher.join(timeout=30)
        supervisor.stop_all()


def _wait_for(said: list[str], predicate: Callable[[list[str]], bool]) -> None:
    end = time.monotonic() + 60  # a deadline for a stuck supervisor, not a timing check
    while not predicate(said):
        assert time.monotonic() < end, "\n".join(said)
        time.sleep(POLL_S)  # poll interval


def test_supervisor_restarts_a_killed_service_and_leaves_the_others_alone(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    supervisor = Supervisor(say=said.append, stopping=threading.Event())
    victim, bystander = (
        supervisor.start(_uvicorn_spec(name, tmp_path)) for name in ("victim", "bystander")
    )
    supervisor.wait_healthy(victim)
    supervisor.wait_healthy(bystander)
    before = {s.name: s.pid for s in supervisor.services}
    # A client holding a connection when the service dies leaves its port in TIME_WAIT.
    with httpx.Client() as client:
        assert client.get(victim.spec.health_url).status_code == 200
        with _watching(supervisor):
            os.kill(victim.pid, signal.SIGKILL)
            _wait_for(said, lambda lines: any("victim is healthy again" in x for x in lines))
            after = {s.name: s.pid for s in supervisor.services}
            assert after["victim"] != before["victim"]
            assert after["bystander"] == before["bystander"]
            assert httpx.get(victim.spec.health_url).json()["version"] == "victim"
            assert any("victim was killed by SIGKILL" in line for line in said), said
    assert not any(_alive(pid) for pid in (*before.values(), *after.values()))


def test_a_service_that_keeps_dying_is_retried_with_growing_delays() -> None:
    said: list[str] = []
    supervisor = Supervisor(
        say=said.append, stopping=threading.Event(), backoff=Backoff(first_s=0.05, most_s=0.2)
    )
    port = free_port()
    supervisor.start(
        ServiceSpec(
            name="crash",
            command=[sys.executable, "-c", "import sys; sys.exit(3)"],
            url=f"http://127.0.0.1:{port}",
            port=port,
        )
    )
    with _watching(supervisor):
        _wait_for(said, lambda lines: sum("restarting it in" in x for x in lines) >= 4)
    retries = [line for line in said if "restarting it in" in line][:4]
    assert all("crash exited with status 3" in line for line in retries), retries
    delays = [float(line.rsplit(" ", 1)[1].rstrip("s")) for line in retries]
    assert delays == sorted(delays) and delays[0] < delays[-1] == 0.2, delays
