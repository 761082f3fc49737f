"""`parlor up`: the whole chat on one machine, without Docker.

db_api (SQLite under the data directory), lm_api and chat_ui run as uvicorn child
processes on free loopback ports, with nginx in front when it is installed (rendered from
the same template as compose). Each child's output is shown line by line with its name.
Ctrl-C or SIGTERM stops them all (terminate, wait, kill); so does any child dying, and
then the exit status is non-zero.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from parlor.nginx import nginx_binary, write_config

REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = "demo.gguf"
# How long each part may take to answer /health: loading a model from a slow disk is the
# long one; the rest start in seconds.
HEALTH_DEADLINE_S = {"db_api": 60.0, "lm_api": 600.0, "chat_ui": 60.0, "nginx": 30.0}
STOP_GRACE_S = 10.0


class UpError(Exception):
    """A problem the user can fix; its message says how."""


@dataclass(frozen=True)
class UpOptions:
    port: int = 8080
    model: Path | None = None
    demo: bool = False
    data_dir: Path = Path("data")
    nginx: bool = True
    download: bool = True


def say(message: str) -> None:
    print(f"parlor   | {message}", flush=True)


# ---- preparing the data directory ---------------------------------------------------


def secret_key(data_dir: Path) -> str:
    """chat_ui's cookie-signing secret, generated once and kept private (0600)."""
    path = data_dir / "secret_key"
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def model_url() -> str:
    """The model `parlor up` fetches when it has none: PARLOR_MODEL_URL (as in compose)
    or lm_api's default, Qwen2.5-0.5B-Instruct Q4_K_M."""
    from lm_api.download import DEFAULT_URL

    return os.environ.get("PARLOR_MODEL_URL") or DEFAULT_URL


def _downloaded_model(data_dir: Path) -> tuple[Path | None, list[Path]]:
    """The model as `parlor download` saves it, and the places looked at."""
    name = model_url().rsplit("/", 1)[-1]
    # `parlor download` saves into ./models by default; --models-dir data/models also works.
    places = [Path("models") / name, data_dir / "models" / name]
    return next((p for p in places if p.is_file()), None), places


def demo_model(data_dir: Path) -> Path:
    """The synthetic demo model, written on first use (a couple of seconds, ~50 MB)."""
    path = data_dir / "models" / DEMO_MODEL
    if not path.is_file():
        from lm_api.synthetic import write_gguf

        say(f"writing the demo model (synthetic, random weights) to {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(path, preset="small")
    return path.resolve()


def resolve_model(options: UpOptions) -> Path:
    """--model, --demo, or the downloaded model; fetched on first use unless told not to.

    A fresh clone must reach a working chat with `uv run parlor up` alone: without a
    model it downloads the default one (once, checksum verified); without the internet it
    falls back to the demo model and says how to get a real one.
    """
    if options.model is not None:
        if not options.model.is_file():
            raise UpError(f"--model {options.model}: no such file")
        return options.model.resolve()
    if options.demo:
        return demo_model(options.data_dir)
    found, looked = _downloaded_model(options.data_dir)
    if found is not None:
        return found.resolve()
    how = (
        "  Fetch the default model (about 490 MB) with:  uv run parlor download\n"
        "  or serve a GGUF file you have:                uv run parlor up --model PATH\n"
        "  or try Parlor with a synthetic model:         uv run parlor up --demo"
    )
    if not options.download:
        places = ", ".join(str(p) for p in looked)
        raise UpError(f"no model found (looked in {places}).\n{how}")
    from lm_api.download import DownloadError, download

    url = model_url()
    say(f"no model yet: downloading {url} into ./models (once; Ctrl-C to stop)")
    try:
        return download(url, Path("models")).resolve()
    except (DownloadError, OSError) as exc:
        say(f"could not download the model: {exc}")
        say("serving the synthetic DEMO model instead: its answers are random words.")
        for line in how.splitlines()[:2]:
            say(line.strip())
        return demo_model(options.data_dir)


def migrate(database_url: str) -> None:
    from db_api.db import ensure_sqlite_directory, upgrade_database

    ensure_sqlite_directory(database_url)
    upgrade_database(database_url)


# ---- child processes ------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if parlor itself is killed (Linux)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    health_url: str
    pump: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.pump = threading.Thread(target=self._pump, daemon=True, name=f"log-{self.name}")
        self.pump.start()

    def _pump(self) -> None:
        stream: IO[bytes] | None = self.proc.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            print(f"{self.name:<8} | {line}", flush=True)

    def alive(self) -> bool:
        return self.proc.poll() is None


def start(name: str, cmd: Sequence[str], env: dict[str, str], health_url: str) -> Child:
    proc = subprocess.Popen(
        list(cmd),
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # Its own process group: Ctrl-C reaches parlor only, which then stops the
        # children in order instead of all of them racing to exit at once.
        process_group=0,
        preexec_fn=_die_with_parent,
    )
    say(f"started {name} (pid {proc.pid})")
    return Child(name, proc, health_url)


def uvicorn(app: str, port: int, *, access_log: bool) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    return cmd if access_log else [*cmd, "--no-access-log"]


def wait_healthy(child: Child, children: Sequence[Child], stopping: threading.Event) -> None:
    """Poll the child's /health until 200; give up if any child dies or time runs out."""
    deadline = time.monotonic() + HEALTH_DEADLINE_S[child.name]
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            dead = [c.name for c in children if not c.alive()]
            if dead:
                raise UpError(f"{', '.join(dead)} exited while starting (see its lines above)")
            if stopping.is_set():
                raise KeyboardInterrupt
            try:
                r = client.get(child.health_url)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = str(exc) or type(exc).__name__
            stopping.wait(0.1)  # poll interval, interrupted by Ctrl-C
    raise UpError(f"{child.name} not healthy after {HEALTH_DEADLINE_S[child.name]:.0f}s: {last}")


def stop_all(children: Sequence[Child]) -> None:
    """Terminate in reverse start order, wait, then kill what is left."""
    for child in reversed(children):
        if child.alive():
            child.proc.terminate()
    end = time.monotonic() + STOP_GRACE_S
    for child in reversed(children):
        try:
            child.proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{child.name} did not stop in {STOP_GRACE_S:.0f}s: killing it")
            child.proc.kill()
            child.proc.wait()
    for child in children:
        child.pump.join(timeout=2)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _install_signal_handlers(stopping: threading.Event) -> Callable[[], None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def run(options: UpOptions) -> int:
    try:
        return _run(options)
    except UpError as exc:
        print(f"parlor up: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before any child started (migrations, demo model)
        return 130


def _run(options: UpOptions) -> int:
    data_dir = options.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not _port_is_free(options.port):
        raise UpError(f"port {options.port} is in use: choose another with --port N")
    model = resolve_model(options)
    database_url = f"sqlite:///{data_dir / 'parlor.db'}"
    say(f"database {database_url}: applying migrations")
    migrate(database_url)

    nginx = nginx_binary() if options.nginx else None
    token = secrets.token_urlsafe(32)  # per run: only these children know it
    ports = {"db_api": free_port(), "lm_api": free_port()}
    ports["chat_ui"] = free_port() if nginx else options.port
    url = f"http://127.0.0.1:{options.port}"

    stopping = threading.Event()
    restore = _install_signal_handlers(stopping)
    children: list[Child] = []
    try:
        db = start(
            "db_api",
            uvicorn("db_api.main:app", ports["db_api"], access_log=False),
            {"DB_API_DATABASE_URL": database_url, "DB_API_INTERNAL_TOKEN": token},
            f"http://127.0.0.1:{ports['db_api']}/health",
        )
        children.append(db)
        say(f"loading model {model}")
        lm = start(
            "lm_api",
            uvicorn("lm_api.main:app", ports["lm_api"], access_log=False),
            {"LM_API_MODEL_PATH": str(model), "LM_API_INTERNAL_TOKEN": token},
            f"http://127.0.0.1:{ports['lm_api']}/health",
        )
        children.append(lm)
        wait_healthy(db, children, stopping)
        wait_healthy(lm, children, stopping)
        ui = start(
            "chat_ui",
            uvicorn("chat_ui.main:app", ports["chat_ui"], access_log=nginx is None),
            {
                "CHAT_UI_DB_API_URL": f"http://127.0.0.1:{ports['db_api']}",
                "CHAT_UI_LM_API_URL": f"http://127.0.0.1:{ports['lm_api']}/v1",
                "CHAT_UI_SECRET_KEY": secret_key(data_dir),
                "CHAT_UI_INTERNAL_TOKEN": token,
            },
            f"http://127.0.0.1:{ports['chat_ui']}/health",
        )
        children.append(ui)
        wait_healthy(ui, children, stopping)
        if nginx:
            config = write_config(
                data_dir / "nginx",
                listen=f"127.0.0.1:{options.port}",
                chat_ui_upstream=f"127.0.0.1:{ports['chat_ui']}",
                console_logs=True,
            )
            check = subprocess.run(config.test_command(nginx), capture_output=True, text=True)
            if check.returncode != 0:
                raise UpError(f"nginx rejected {config.conf}:\n{check.stderr}")
            children.append(start("nginx", config.command(nginx), {}, url + "/health"))
            wait_healthy(children[-1], children, stopping)
        elif options.nginx:
            say("nginx is not installed: serving chat_ui directly (static files included)")

        say(f"Parlor is ready: {url}  (Ctrl-C to stop)")
        while not stopping.is_set():
            dead = [c for c in children if not c.alive()]
            if dead:
                for c in dead:
                    say(f"{c.name} exited with status {c.proc.returncode}: stopping everything")
                return 1
            stopping.wait(0.5)  # child watch interval; Ctrl-C wakes it at once
        say("stopping")
        return 0
    except KeyboardInterrupt:
        say("stopping")
        return 130
    finally:
        stop_all(children)
        restore()
        if children:
            say("all stopped")
