"""The three Dockerfiles, parsed for the essentials. There is no Docker engine on the test
machines, so the images are not built here: this checks what a review would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import REPO

SERVICES = {"db_api": "db", "lm_api": "lm", "chat_ui": "ui"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, args = line.partition(" ")
            result.append((op.upper(), args.strip()))
    return result


def resolve_args(steps: list[tuple[str, str]], value: str) -> str:
    """Replace ${NAME} with the default of a global `ARG NAME=default`."""
    defaults = dict(args.split("=", 1) for op, args in steps if op == "ARG" and "=" in args)
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), value)


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_essentials(service: str) -> None:
    steps = instructions(REPO / service / "Dockerfile")
    ops = [op for op, _ in steps]

    bases = [resolve_args(steps, args.split()[0]) for op, args in steps if op == "FROM"]
    assert bases
    for base in bases:
        assert ":" in base and not base.endswith(":latest"), base
    assert bases[-1] == "python:3.11-slim-bookworm"

    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the service must not run as root"
    assert "useradd" in " ".join(args for op, args in steps if op == "RUN")

    assert "HEALTHCHECK" in ops
    health = next(args for op, args in steps if op == "HEALTHCHECK")
    assert "http://127.0.0.1:8000/health" in health
    assert ("EXPOSE", "8000") in steps
    cmd = next(args for op, args in reversed(steps) if op == "CMD")
    expected = f'["uvicorn", "{service}.main:app", "--host", "0.0.0.0", "--port", "8000"'
    assert cmd.startswith(expected)

    # Dependencies in their own layer, before the code, from the lock, this group only.
    copies = [args for op, args in steps if op == "COPY" and "--from" not in args]
    assert copies[0] == "pyproject.toml uv.lock ./"
    assert any(c.startswith(f"{service}/ ") for c in copies[1:])
    sync = next(args for op, args in steps if op == "RUN" and "uv sync" in args)
    assert "--frozen" in sync and "--no-install-project" in sync
    assert f"--no-default-groups --group {SERVICES[service]}" in sync
    assert re.search(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", sync)
    code_index = next(i for i, (op, a) in enumerate(steps) if a.startswith(f"{service}/ "))
    sync_index = next(i for i, (op, a) in enumerate(steps) if "uv sync" in a)
    assert sync_index < code_index

    # Every file copied from the build context exists in the repository.
    for copy in copies:
        for source in copy.split()[:-1]:
            assert (REPO / source).exists(), f"{service}/Dockerfile copies missing {source}"


def test_lm_api_compiles_in_a_builder_stage() -> None:
    steps = instructions(REPO / "lm_api" / "Dockerfile")
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build")
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "build-essential" in runs and "cmake" in runs
    assert "--from=build /app/.venv /app/.venv" in [a for op, a in steps if op == "COPY"]
    assert ("ARG", 'CMAKE_ARGS=""') in steps  # compose.gpu.yml sets -DGGML_CUDA=on


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    for entry in (".env", ".git", ".venv", "data", "models", "*.gguf", "tests"):
        assert entry in ignored, entry


def _locked_closure(group: str) -> set[str]:
    """Distributions an image installs: the base dependencies plus `group`, transitively,
    as uv.lock resolves them (what `uv sync --no-default-groups --group <g>` installs)."""
    import tomllib

    lock = tomllib.loads((REPO / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    root = packages["parlor"]
    todo = [*root.get("dependencies", []), *root["dev-dependencies"][group]]
    seen: set[str] = set()
    while todo:
        dep = todo.pop()
        name = dep["name"]
        package = packages[name]
        extras = dep.get("extra", [])
        if name in seen and not extras:
            continue
        seen.add(name)
        todo.extend(package.get("dependencies", []))
        for extra in extras:
            todo.extend(package.get("optional-dependencies", {}).get(extra, []))
    return seen


def _imported_modules(package: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_service_imports_are_in_its_image(service: str) -> None:
    """Each image installs only its own group: every module the service (or a package of
    the repository that its image copies beside it, such as db_contract) imports must come
    from the standard library, a package the image copies, or that group's locked closure."""
    import sys
    from importlib.metadata import packages_distributions

    installed = _locked_closure(SERVICES[service])
    providers = packages_distributions()
    copied = {
        args.split()[0].rstrip("/")
        for op, args in instructions(REPO / service / "Dockerfile")
        if op == "COPY" and "--from" not in args and (REPO / args.split()[0]).is_dir()
    }
    assert service in copied
    imported = set().union(*(_imported_modules(REPO / package) for package in copied))
    missing = {}
    for module in imported:
        if module in sys.stdlib_module_names or module in ("__future__", *copied):
            continue
        # Normalized like the lock's names (PEP 503).
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(module, [])}
        if not dists & installed:
            missing[module] = sorted(dists) or "not installed here"
    assert not missing, f"{service} imports what its image does not install: {missing}"


@pytest.mark.parametrize("service", SERVICES)
def test_services_never_import_the_parlor_tools(service: str) -> None:
    """Images ship a service's own folder only: `parlor` (the command, the supervisor, the
    synthetic model writer) is a tool of a clone, never a service's dependency."""
    assert "parlor" not in _imported_modules(REPO / service)


def test_lm_api_image_carries_no_synthetic_model_writer() -> None:
    """The writer of synthetic GGUFs is parlor.synth; lm_api/ (all its image copies of the
    repository) only reads models."""
    writers = [p for p in (REPO / "lm_api").rglob("*.py") if "GGUFWriter" in p.read_text()]
    assert not writers
    assert "GGUFWriter" in (REPO / "parlor" / "synth.py").read_text()
