"""`parlor up`: the whole chat on one machine, without Docker.

db_api (SQLite under the data directory), lm_api and chat_ui run as uvicorn child
processes on free loopback ports (wired as parlor.stack describes), with nginx in front
when it is installed (rendered from the same template as compose). Each child's output is
shown line by line under its name. parlor.supervisor keeps them running: one that dies is
restarted with backoff while the others keep serving, as compose's `restart:` does. Only
Ctrl-C or SIGTERM stops them all (the last started first: terminate, wait, kill).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from parlor.nginx import NginxError, nginx_binary, nginx_service, write_config
from parlor.stack import Ports, migrate, service_specs
from parlor.supervisor import LOOPBACK, NotHealthy, ServiceExited, Supervisor, port_is_free

DEMO_MODEL = "demo.gguf"


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
    reload: bool = False


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
    """The model as `parlor download` saves it, and the places looked at. Without the
    default model, another one downloaded there (`parlor download llama-3.2-1b`) is the
    default instead: a person who fetched the model they wanted gets no second download."""
    name = model_url().rsplit("/", 1)[-1]
    # `parlor download` saves into ./models by default; --models-dir data/models also works.
    folders = [Path("models"), data_dir / "models"]
    places = [folder / name for folder in folders]
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        # The demo model is never taken for a chosen one (a later run still downloads).
        others = (
            sorted(p for p in f.glob("*.gguf") if p.is_file() and p.name != DEMO_MODEL)
            for f in folders
        )
        found = next((paths[0] for paths in others if paths), None)
    return found, places


def served_models(model: Path) -> list[str]:
    """The models lm_api serves beside `model`: every GGUF in its directory, by name."""
    return sorted(p.stem for p in model.parent.glob("*.gguf") if p.is_file())


def demo_model(data_dir: Path) -> Path:
    """The synthetic demo model, written on first use (a couple of seconds, ~50 MB)."""
    path = data_dir / "models" / DEMO_MODEL
    if not path.is_file():
        from parlor.synth import write_gguf

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


# ---- running --------------------------------------------------------------------------


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
    if not port_is_free(options.port):
        raise UpError(f"port {options.port} is in use: choose another with --port N")
    model = resolve_model(options)
    database_url = f"sqlite:///{data_dir / 'parlor.db'}"
    say(f"database {database_url}: applying migrations")
    migrate(database_url)

    nginx = nginx_binary() if options.nginx else None
    ports = Ports.free(chat_ui=None if nginx else options.port)
    db_spec, lm_spec, ui_spec = service_specs(
        ports,
        database_url=database_url,
        model=model,
        token=secrets.token_urlsafe(32),  # per run: only these children know it
        secret_key=secret_key(data_dir),
        ui_access_log=nginx is None,
        reload=options.reload,
    )
    url = f"http://127.0.0.1:{options.port}"

    stopping = threading.Event()
    restore = _install_signal_handlers(stopping)
    supervisor = Supervisor(say=say, stopping=stopping)
    try:
        if options.reload:
            say("--reload: a service restarts when a file of its package (or db_contract) changes")
        db = supervisor.start(db_spec)
        say(f"loading model {model}")
        others = [name for name in served_models(model) if name != model.stem]
        if others:
            say(f"also served from {model.parent} (loaded on first use): {', '.join(others)}")
        lm = supervisor.start(lm_spec)
        supervisor.wait_healthy(db)
        supervisor.wait_healthy(lm)
        supervisor.wait_healthy(supervisor.start(ui_spec))
        if nginx:
            try:
                config = write_config(
                    data_dir / "nginx",
                    listen=f"{LOOPBACK}:{options.port}",
                    chat_ui_upstream=f"{LOOPBACK}:{ports.chat_ui}",
                    console_logs=True,
                )
                nginx_spec = nginx_service(config, options.port)
            except NginxError as exc:
                raise UpError(str(exc)) from None
            supervisor.wait_healthy(supervisor.start(nginx_spec))
        elif options.nginx:
            say("nginx is not installed: serving chat_ui directly (static files included)")

        say(f"Parlor is ready: {url}  (Ctrl-C to stop)")
        supervisor.watch()
        say("stopping")
        return 0
    except (ServiceExited, NotHealthy) as exc:
        raise UpError(str(exc)) from None
    except KeyboardInterrupt:
        say("stopping")
        return 130
    finally:
        supervisor.stop_all()
        restore()
        if supervisor.services:
            say("all stopped")
