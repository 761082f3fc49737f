"""compose.yml and compose.gpu.yml, read as a reviewer would (no Docker engine here, so
nothing is started: the schema, the wiring and the secrets are checked)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO, SHARED

SCHEMA = SHARED / "schemas" / "compose-spec.json"
COMPOSE = REPO / "compose.yml"
GPU = REPO / "compose.gpu.yml"
ENV_EXAMPLE = REPO / ".env.example"
TEMPLATE = REPO / "nginx" / "templates" / "default.conf.template"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = compose["services"]
    return services


@pytest.mark.parametrize("path", [COMPOSE, GPU], ids=["compose.yml", "compose.gpu.yml"])
def test_valid_against_the_compose_spec(path: Path) -> None:
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} is absent (the Compose Specification JSON schema)")
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(load(path), schema)


def test_only_nginx_publishes_a_port(services: dict[str, Any]) -> None:
    published = {name for name, svc in services.items() if svc.get("ports")}
    # oauth2-proxy is the front door of profile `sso` (tests/deploy/test_sso.py).
    assert published == {"nginx", "oauth2-proxy"}
    assert services["oauth2-proxy"]["profiles"] == ["sso"]
    assert services["nginx"]["ports"] == ["${PARLOR_BIND:-127.0.0.1}:${PARLOR_PORT:-8080}:8080"]
    assert not any("expose" in svc for svc in services.values())


def test_networks(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert compose["networks"]["backend"]["internal"] is True
    assert not compose["networks"]["frontend"].get("internal")
    nets = {name: set(svc["networks"]) for name, svc in services.items()}
    assert nets.pop("nginx") == {"frontend", "backend"}
    # Profile `sso` (tests/deploy/test_sso.py): its own internal network.
    assert compose["networks"]["sso"]["internal"] is True
    assert nets.pop("oauth2-proxy") == {"frontend", "sso"}
    assert nets.pop("nginx-sso") == {"sso"}
    assert nets.pop("chat_ui_sso") == {"backend", "sso"}
    # The model download needs the internet, and nothing else: it is not on backend.
    assert nets.pop("model-fetch") == {"egress"}
    assert all(n == {"backend"} for n in nets.values()), nets


def test_startup_order(services: dict[str, Any]) -> None:
    def deps(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name]["depends_on"].items()}

    assert deps("migrate") == {"postgres": "service_healthy"}
    assert deps("db_api") == {
        "postgres": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    assert deps("lm_api") == {"model-fetch": "service_completed_successfully"}
    assert deps("chat_ui") == {"db_api": "service_healthy", "lm_api": "service_healthy"}
    assert deps("nginx") == {"chat_ui": "service_healthy"}
    assert services["migrate"]["command"] == ["python", "-m", "db_api.migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["model-fetch"]["restart"] == "no"


def test_healthchecks(services: dict[str, Any]) -> None:
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    lm = services["lm_api"]["healthcheck"]
    assert "/health" in " ".join(lm["test"])
    assert lm["start_period"] == "5m"  # model loading
    assert "/health" in " ".join(services["nginx"]["healthcheck"]["test"])
    # db_api and chat_ui get theirs from their Dockerfile's HEALTHCHECK (test_dockerfiles).


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        image = svc["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), (name, image)
        assert not image.endswith(":latest"), (name, image)
    assert re.fullmatch(r"postgres:\d+\.\d+-alpine", services["postgres"]["image"])
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+-alpine", services["nginx"]["image"])


def test_builds_use_the_service_dockerfiles(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if "build" in svc:
            assert svc["build"]["context"] == "."
            assert (REPO / svc["build"]["dockerfile"]).is_file(), name


def test_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert set(compose["volumes"]) == {"pgdata", "models"}
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "models:/models" in services["model-fetch"]["volumes"]
    assert "models:/models:ro" in services["lm_api"]["volumes"]
    model_path = services["lm_api"]["environment"]["LM_API_MODEL_PATH"]
    assert model_path.startswith("/models/")


def test_secrets_are_required_and_none_is_committed(services: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    for secret in ("INTERNAL_TOKEN", "CHAT_UI_SECRET_KEY", "POSTGRES_PASSWORD"):
        assert re.search(r"\$\{" + secret + r":\?[^}]+\}", text), secret
    env = services["chat_ui"]["environment"]
    assert env["CHAT_UI_ENV"] == "production"  # refuses a default secret
    token = "${INTERNAL_TOKEN:?set INTERNAL_TOKEN in .env (see .env.example)}"
    assert env["CHAT_UI_INTERNAL_TOKEN"] == token
    assert services["db_api"]["environment"]["DB_API_INTERNAL_TOKEN"] == token
    assert services["lm_api"]["environment"]["LM_API_INTERNAL_TOKEN"] == token
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for secret in ("INTERNAL_TOKEN", "CHAT_UI_SECRET_KEY", "POSTGRES_PASSWORD"):
        assert example[secret] == "", f"{secret} must be empty in .env.example"


def test_env_example_documents_every_variable() -> None:
    used = set()
    for path in (COMPOSE, GPU):
        used |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", path.read_text()))
    documented = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert used == documented


def test_nginx_gets_every_template_variable(services: dict[str, Any]) -> None:
    nginx = services["nginx"]
    wanted = set(re.findall(r"\$\{(\w+)\}", TEMPLATE.read_text()))
    env = nginx["environment"]
    assert wanted <= set(env)
    pattern = re.compile(env["NGINX_ENVSUBST_FILTER"])
    assert all(pattern.search(name) for name in wanted)
    # nginx's own variables must not look like environment variables to envsubst.
    assert not pattern.search("host") and not pattern.search("HOSTNAME")
    assert "./nginx/templates:/etc/nginx/templates:ro" in nginx["volumes"]
    static = f"./chat_ui/static:{env['PARLOR_STATIC_ROOT']}:ro"
    assert static in nginx["volumes"]
    assert env["PARLOR_CHAT_UI_UPSTREAM"] == "chat_ui:8000"


def test_gpu_override(compose: dict[str, Any]) -> None:
    gpu = load(GPU)["services"]
    lm = gpu["lm_api"]
    assert lm["environment"]["LM_API_N_GPU_LAYERS"] == "-1"
    assert "-DGGML_CUDA=on" in lm["build"]["args"]["CMAKE_ARGS"]
    assert lm["build"]["args"]["BUILD_IMAGE"].startswith("nvidia/cuda:")
    assert "-devel-" in lm["build"]["args"]["BUILD_IMAGE"]
    assert "-runtime-" in lm["build"]["args"]["RUNTIME_IMAGE"]
    (device,) = lm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # Every service the override touches exists in the base file.
    assert set(gpu) <= set(compose["services"])
    # model-fetch shares lm_api's image, so the CUDA build happens once.
    assert gpu["model-fetch"]["image"] == lm["image"]
    assert gpu["model-fetch"]["build"] == lm["build"]


def test_model_fetch_uses_the_download_tool_defaults(services: dict[str, Any]) -> None:
    from lm_api.download import DEFAULT_URL

    command = services["model-fetch"]["command"]
    assert command[:3] == ["python", "-m", "lm_api.download"]
    assert command[3] == "${PARLOR_MODEL_URL:-" + DEFAULT_URL + "}"
    default_file = DEFAULT_URL.rsplit("/", 1)[-1]
    assert f"--name=${{PARLOR_MODEL_FILE:-{default_file}}}" in command
    assert "--models-dir=/models" in command
    model_path = services["lm_api"]["environment"]["LM_API_MODEL_PATH"]
    assert model_path == f"/models/${{PARLOR_MODEL_FILE:-{default_file}}}"
