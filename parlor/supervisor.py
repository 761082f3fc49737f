"""Services as child processes: the one supervisor of `parlor up`, the tests and the benchmarks.

- `free_port`, `port_is_free`: loopback ports, checked the way uvicorn and nginx bind them
  (SO_REUSEADDR), so a port whose last connections linger in TIME_WAIT is free, as it is
  for them.
- `uvicorn_command`: the command line that runs a service's ASGI app.
- `ServiceSpec`: what to run (command, environment, port, health URL, how long it may take
  to become healthy); `Service`: one run of it (its process in its own process group, its
  output in a log file or on the console under its name).
- `wait_healthy` (poll a URL until 200, with a deadline), `stop_process` (SIGTERM, wait,
  SIGKILL).
- `run_service`: a service for the length of a `with` block (tests, benchmarks).
- `Supervisor`: keeps services running like compose's `restart: unless-stopped`: one that
  dies is started again with backoff while the others keep serving (`parlor up`).

Readiness is always a health poll with a deadline; nothing here sleeps to wait for a server.
Start services from a thread that outlives them (the main thread): on Linux a child gets
SIGTERM when the thread that started it ends, so that none outlives a killed parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from parlor.paths import REPO

LOOPBACK = "127.0.0.1"
POLL_S = 0.05  # health poll interval


# ---- ports ------------------------------------------------------------------------------


def _bind_probe(port: int, host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As uvicorn (asyncio's create_server) and nginx do: a port with connections left in
    # TIME_WAIT can be bound again at once, while one with a listener cannot.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    return s


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a server could listen on `port` now (TIME_WAIT leftovers do not count)."""
    try:
        _bind_probe(port, host).close()
    except OSError:
        return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with _bind_probe(0, host) as s:
        return int(s.getsockname()[1])


# ---- command lines --------------------------------------------------------------------------


def uvicorn_command(
    app: str,
    port: int,
    *,
    host: str = LOOPBACK,
    access_log: bool = True,
    log_level: str | None = None,
    reload_dirs: Sequence[Path] = (),
) -> list[str]:
    """`python -m uvicorn <app>` on `host:port`; with `reload_dirs`, restarted by uvicorn
    whenever a file under them changes (`--reload`)."""
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", host, "--port", str(port)]
    if not access_log:
        cmd.append("--no-access-log")
    if log_level is not None:
        cmd += ["--log-level", log_level]
    if reload_dirs:
        cmd.append("--reload")
        for directory in reload_dirs:
            cmd += ["--reload-dir", str(directory)]
    return cmd


# ---- one service --------------------------------------------------------------------------


class ServiceExited(RuntimeError):
    """The process exited before it became healthy."""


class NotHealthy(TimeoutError):
    """The health URL did not answer 200 before the deadline."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: Sequence[str]
    url: str  # its base URL, e.g. http://127.0.0.1:8001
    env: Mapping[str, str] = field(default_factory=dict)
    health_path: str = "/health"
    deadline_s: float = 60.0  # how long it may take to answer 200 on its health URL
    port: int | None = None  # the port it listens on, checked before a restart
    cwd: Path = REPO

    @property
    def health_url(self) -> str:
        return self.url + self.health_path


def _log_tail(log: Path | None, chars: int = 4000) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-chars:]


def wait_healthy(
    url: str,
    *,
    deadline_s: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    stopping: threading.Event | None = None,
) -> None:
    """Poll `url` until it answers 200. Raises ServiceExited as soon as `proc` exits,
    NotHealthy at the deadline, KeyboardInterrupt when `stopping` is set."""
    end = time.monotonic() + deadline_s
    last = "no answer yet"
    # trust_env=False: loopback, never through an HTTP proxy from the environment.
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            if proc is not None and proc.poll() is not None:
                raise ServiceExited(
                    f"process for {url} exited with {proc.returncode}:\n{_log_tail(log)}"
                )
            if stopping is not None and stopping.is_set():
                raise KeyboardInterrupt
            try:
                r = client.get(url)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() >= end:
                tail = _log_tail(log)
                raise NotHealthy(f"{url} not healthy after {deadline_s:.0f}s: {last}\n{tail}")
            if stopping is not None:
                stopping.wait(POLL_S)  # poll interval, cut short by Ctrl-C
            else:
                time.sleep(POLL_S)  # poll interval, not a wait for readiness


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_process(
    proc: subprocess.Popen[bytes], timeout_s: float = 15.0, *, group: bool = False
) -> None:
    """SIGTERM `proc`, give it `timeout_s` to exit cleanly, then SIGKILL it. With `group`
    (it leads its own process group), the signals go to the whole group, and whatever is
    left of the group afterwards (nginx workers, uvicorn's reload worker) is killed."""
    if proc.poll() is None:
        if group:
            _signal_group(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            if group:
                _signal_group(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait(timeout=5)
    if group:
        _signal_group(proc.pid, signal.SIGKILL)


# Loaded once in the parent: the child, between fork and exec, only makes the call.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGTERM when the parent goes away (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
        return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Service:
    """One run of a `ServiceSpec`: a process in its own process group (Ctrl-C reaches the
    supervisor only, which then stops the services in order), whose output goes to `log`
    (appended) or, without one, to the console, each line under the service's name."""

    def __init__(self, spec: ServiceSpec, *, log: Path | None = None) -> None:
        self.spec = spec
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None
        self.started_at = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def env(self) -> dict[str, str]:
        return dict(self.spec.env)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> None:
        spec = self.spec
        out: IO[bytes] | None = None
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            out = self.log.open("ab")
        try:
            self._proc = subprocess.Popen(
                list(spec.command),
                cwd=spec.cwd,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **spec.env},
                stdin=subprocess.DEVNULL,
                stdout=out if out is not None else subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=_die_with_parent,  # only a prctl call (see above)
            )
        finally:
            if out is not None:
                out.close()  # the child has its own copy
        self.started_at = time.monotonic()
        if out is None:
            self._pump = threading.Thread(
                target=self._show_output, args=(self._proc,), daemon=True, name=f"log-{self.name}"
            )
            self._pump.start()

    def _show_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            print(f"{self.name:<8} | {line}", flush=True)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def wait_healthy(self, stopping: threading.Event | None = None) -> None:
        wait_healthy(
            self.spec.health_url,
            deadline_s=self.spec.deadline_s,
            proc=self.proc,
            log=self.log,
            stopping=stopping,
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout_s, group=True)
        if self._pump is not None:
            self._pump.join(timeout=2)


@contextlib.contextmanager
def running(spec: ServiceSpec, *, log: Path | None = None) -> Iterator[Service]:
    """`spec` started and healthy for the length of the block, stopped after it."""
    service = Service(spec, log=log)
    service.start()
    try:
        service.wait_healthy()
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def run_service(
    name: str,
    app: str,
    env: Mapping[str, str],
    log_dir: Path,
    *,
    health_path: str = "/health",
    deadline_s: float = 120.0,
    port: int | None = None,
) -> Iterator[Service]:
    """`uvicorn <app>` on a free loopback port with `env`, healthy, its output in
    `log_dir/<name>.log`; stopped after the block."""
    spec = uvicorn_spec(name, app, env, health_path=health_path, deadline_s=deadline_s, port=port)
    with running(spec, log=log_dir / f"{name}.log") as service:
        yield service


def uvicorn_spec(
    name: str,
    app: str,
    env: Mapping[str, str],
    *,
    health_path: str = "/health",
    deadline_s: float = 120.0,
    port: int | None = None,
) -> ServiceSpec:
    """`uvicorn <app>` with `env` on loopback `port` (a free one when None), logging
    warnings only: a service as the tests and benchmarks run it."""
    port = port or free_port()
    return ServiceSpec(
        name=name,
        command=uvicorn_command(app, port, log_level="warning"),
        url=f"http://{LOOPBACK}:{port}",
        env=dict(env),
        health_path=health_path,
        deadline_s=deadline_s,
        port=port,
    )


# ---- keeping services running --------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Delays before restarting a service that died: `first`, doubling up to `most`; back
    to `first` once it has stayed healthy for `reset_after_s`."""

    first_s: float = 0.5
    most_s: float = 30.0
    reset_after_s: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.most_s, self.first_s * 2 ** max(0, failures - 1)))


@dataclass
class _Watched:
    service: Service
    state: str = "healthy"  # "healthy", "starting" (restarted, not healthy yet), "waiting"
    failures: int = 0  # deaths since it last stayed healthy for Backoff.reset_after_s
    restarts: int = 0
    healthy_since: float = 0.0
    next_try: float = 0.0
    deadline: float = 0.0


class Supervisor:
    """Services started in order and waited for, then kept running: one that exits (or does
    not become healthy again in time) is restarted after a backoff, and the supervisor says
    why; the others keep serving. Only `stopping` (Ctrl-C) ends `watch`; `stop_all` then
    stops every service, the last started first."""

    def __init__(
        self,
        *,
        say: Callable[[str], None],
        stopping: threading.Event,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.say = say
        self.stopping = stopping
        self.backoff = backoff
        self._watched: list[_Watched] = []
        self._http = httpx.Client(timeout=1.0, trust_env=False)

    @property
    def services(self) -> list[Service]:
        return [w.service for w in self._watched]

    def start(self, spec: ServiceSpec) -> Service:
        """Start a service (output on the console); `wait_healthy` waits for it."""
        service = Service(spec)
        service.start()
        self.say(f"started {spec.name} (pid {service.pid})")
        self._watched.append(_Watched(service, healthy_since=time.monotonic()))
        return service

    def wait_healthy(self, service: Service) -> None:
        """Wait until `service` answers its health URL. While starting, any service dying is
        an error (a configuration the user must fix, not something a restart cures)."""
        end = time.monotonic() + service.spec.deadline_s
        while True:
            dead = [s for s in self.services if not s.alive()]
            if dead:
                names = ", ".join(s.name for s in dead)
                raise ServiceExited(f"{names} exited while starting (see its lines above)")
            try:
                wait_healthy(
                    service.spec.health_url,
                    deadline_s=min(1.0, max(0.0, end - time.monotonic())),
                    proc=service.proc,
                    stopping=self.stopping,
                )
            except NotHealthy as exc:
                if time.monotonic() >= end:
                    first = str(exc).splitlines()[0].split(": ", 1)[-1]
                    raise NotHealthy(
                        f"{service.name} not healthy after {service.spec.deadline_s:.0f}s: {first}"
                    ) from None
                continue
            except ServiceExited:
                continue  # reported with the others' at the top of the loop
            for w in self._watched:
                if w.service is service:
                    w.healthy_since = time.monotonic()
            return

    def watch(self, tick_s: float = 0.2) -> None:
        """Keep every service running until `stopping` is set."""
        while not self.stopping.is_set():
            now = time.monotonic()
            for w in self._watched:
                self._check(w, now)
            self.stopping.wait(tick_s)  # watch interval; Ctrl-C wakes it at once

    def _check(self, w: _Watched, now: float) -> None:
        service = w.service
        if w.state == "waiting":
            if now >= w.next_try:
                self._restart(w, now)
            return
        if not service.alive():
            code = service.returncode
            ran = now - service.started_at
            service.stop()  # reap it, and whatever it left in its process group
            why = describe_exit(code if code is not None else 0)
            self._schedule(w, now, f"{service.name} {why} after {ran:.0f}s")
            return
        if w.state == "starting":
            if self._answers(service):
                w.state, w.healthy_since = "healthy", now
                self.say(f"{service.name} is healthy again (restart {w.restarts})")
            elif now >= w.deadline:
                service.stop()
                late = f"{service.name} not healthy {service.spec.deadline_s:.0f}s after a restart"
                self._schedule(w, now, late)
        elif w.failures and now - w.healthy_since >= self.backoff.reset_after_s:
            w.failures = 0

    def _schedule(self, w: _Watched, now: float, why: str) -> None:
        w.failures += 1
        delay = self.backoff.delay(w.failures)
        w.state, w.next_try = "waiting", now + delay
        self.say(f"{why}: restarting it in {delay:.1f}s")

    def _restart(self, w: _Watched, now: float) -> None:
        spec = w.service.spec
        if spec.port is not None and not port_is_free(spec.port):
            self._schedule(w, now, f"port {spec.port} of {spec.name} is taken by another program")
            return
        w.restarts += 1
        w.service = Service(spec)
        w.service.start()
        w.state, w.deadline = "starting", now + spec.deadline_s
        self.say(f"started {spec.name} (pid {w.service.pid}), restart {w.restarts}")

    def _answers(self, service: Service) -> bool:
        try:
            return self._http.get(service.spec.health_url).status_code == 200
        except httpx.HTTPError:
            return False

    def stop_all(self, grace_s: float = 10.0) -> None:
        """Stop every service, the last started first."""
        for w in reversed(self._watched):
            w.service.stop(grace_s)
        self._http.close()
