"""Parlor's three services and how they are wired to each other, written once: `parlor up`,
the stack tests and the benchmarks all start these command lines with these settings.

    browser -> nginx -> chat_ui -> db_api (SQLite or PostgreSQL)
                                -> lm_api (llama.cpp on a GGUF file)

`service_specs` describes the three uvicorn processes; `run_stack` runs them (and nginx in
front) for the length of a `with` block, each log in its own file.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from parlor.nginx import run_nginx
from parlor.paths import REPO
from parlor.supervisor import LOOPBACK, POLL_S, Service, ServiceSpec, free_port, uvicorn_command

# How long each service may take to answer /health: loading a model from a slow disk on a
# busy machine is the long one; the others start in seconds.
DEADLINE_S = {"db_api": 60.0, "lm_api": 600.0, "chat_ui": 60.0}
# The repository's packages each service imports besides its own (what --reload watches).
SHARED_PACKAGES = {"db_api": ("db_contract",), "lm_api": (), "chat_ui": ("db_contract",)}


@dataclass(frozen=True)
class Ports:
    db_api: int
    lm_api: int
    chat_ui: int

    @classmethod
    def free(cls, *, chat_ui: int | None = None) -> Ports:
        return cls(free_port(), free_port(), chat_ui or free_port())


def service_specs(
    ports: Ports,
    *,
    database_url: str,
    model: Path,
    token: str,
    secret_key: str,
    lm_env: Mapping[str, str] | None = None,
    ui_env: Mapping[str, str] | None = None,
    log_level: str | None = None,
    ui_access_log: bool = False,
    reload: bool = False,
) -> list[ServiceSpec]:
    """db_api, lm_api and chat_ui (in that order) on loopback, sharing `token`; with
    `reload`, each restarts when a file of its own package, or of a shared one it
    imports, changes."""

    def spec(name: str, port: int, env: Mapping[str, str], access_log: bool = False) -> ServiceSpec:
        command = uvicorn_command(
            f"{name}.main:app",
            port,
            access_log=access_log,
            log_level=log_level,
            reload_dirs=[REPO / p for p in (name, *SHARED_PACKAGES[name])] if reload else (),
        )
        url = f"http://{LOOPBACK}:{port}"
        return ServiceSpec(name, command, url, env, deadline_s=DEADLINE_S[name], port=port)

    db = {"DB_API_DATABASE_URL": database_url, "DB_API_INTERNAL_TOKEN": token}
    lm = {"LM_API_MODEL_PATH": str(model), "LM_API_INTERNAL_TOKEN": token, **(lm_env or {})}
    ui = {
        "CHAT_UI_DB_API_URL": f"http://{LOOPBACK}:{ports.db_api}",
        "CHAT_UI_LM_API_URL": f"http://{LOOPBACK}:{ports.lm_api}/v1",
        "CHAT_UI_INTERNAL_TOKEN": token,
        "CHAT_UI_SECRET_KEY": secret_key,
        **(ui_env or {}),
    }
    return [
        spec("db_api", ports.db_api, db),
        spec("lm_api", ports.lm_api, lm),
        spec("chat_ui", ports.chat_ui, ui, access_log=ui_access_log),
    ]


def migrate(database_url: str) -> None:
    """Bring the database's schema to the newest revision (db_api's one way to migrate)."""
    from db_api.migrate import migrate as migrate_database

    migrate_database(database_url)


@dataclass
class Stack:
    """The whole chat as real processes: nginx -> chat_ui -> db_api + lm_api."""

    url: str  # nginx: the only address a browser would use
    db: Service
    lm: Service
    ui: Service
    nginx: Service
    database_url: str
    static_root: Path | None
    max_tokens: int
    token: str

    @property
    def lm_base(self) -> str:
        """lm_api's OpenAI base URL."""
        return self.lm.url + "/v1"

    @property
    def lm_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def pids(self) -> dict[str, int]:
        return {
            "nginx": self.nginx.pid,
            "chat_ui": self.ui.pid,
            "db_api": self.db.pid,
            "lm_api": self.lm.pid,
        }

    def lm_metric(self, name: str) -> float:
        """A sample of lm_api's Prometheus metrics (0 when not exported yet)."""
        text = httpx.get(self.lm.url + "/metrics", trust_env=False).text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def wait_idle(self, deadline_s: float = 120.0) -> None:
        """Poll until lm_api runs no generation (a stopped one may still be winding down)."""
        end = time.monotonic() + deadline_s
        while self.lm_metric("lm_api_generation_in_progress") != 0:
            if time.monotonic() > end:
                raise TimeoutError("lm_api still generating at the deadline")
            time.sleep(POLL_S)  # poll interval


@contextlib.contextmanager
def run_stack(
    work: Path,
    *,
    database_url: str,
    model: Path,
    max_tokens: int,
    # Throw-away values for a loopback stack that lives as long as the block.
    token: str = "stack-internal-token",  # noqa: S107
    secret_key: str = "stack-secret-0123456789abcdef",  # noqa: S107
    static_root: Path | None = None,
    lm_env: Mapping[str, str] | None = None,
    ui_env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """db_api (on `database_url`, migrated), lm_api on `model`, chat_ui and nginx in front,
    started the way `parlor up` starts them, each waited for through its health; logs in
    `work/logs/`."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    migrate(database_url)
    specs = service_specs(
        Ports.free(),
        database_url=database_url,
        model=model,
        token=token,
        secret_key=secret_key,
        lm_env=lm_env,
        ui_env={"CHAT_UI_MAX_TOKENS": str(max_tokens), **(ui_env or {})},
        log_level="warning",
    )
    with contextlib.ExitStack() as started:
        db, lm, ui = (Service(spec, log=logs / f"{spec.name}.log") for spec in specs)
        # db_api and lm_api start together (the model loads meanwhile); chat_ui after both.
        for service in (db, lm):
            service.start()
            started.callback(service.stop)
        db.wait_healthy()
        lm.wait_healthy()
        ui.start()
        started.callback(ui.stop)
        ui.wait_healthy()
        url, nginx, _config = started.enter_context(
            run_nginx(work / "nginx", ui.url, static_root=static_root)
        )
        yield Stack(
            url=url,
            db=db,
            lm=lm,
            ui=ui,
            nginx=nginx,
            database_url=database_url,
            static_root=static_root,
            max_tokens=max_tokens,
            token=token,
        )
