"""What the numbers were measured on: CPU, cores, memory, library versions, commit."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from parlor.paths import REPO


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def physical_cores() -> int:
    """Distinct (socket, core) pairs among the CPUs we may use: llama.cpp's best thread count."""
    allowed = os.sched_getaffinity(0)
    cores: set[tuple[str, str]] = set()
    try:
        blocks = Path("/proc/cpuinfo").read_text().strip().split("\n\n")
    except OSError:
        return len(allowed)
    for block in blocks:
        fields = {
            k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in block.splitlines())
        }
        if "processor" in fields and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return max(1, min(len(cores) or len(allowed), len(allowed)))


def describe() -> dict[str, str | int | float]:
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    commit = _git("rev-parse", "--short", "HEAD")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "logical_cpus": len(os.sched_getaffinity(0)),
        "physical_cores": physical_cores(),
        "ram_gb": round(_ram_gb(), 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "llama_cpp_python": _version("llama-cpp-python"),
        "nginx": _nginx_version(),
        "commit": commit + (" (with uncommitted changes)" if dirty and dirty != "unknown" else ""),
    }


def _nginx_version() -> str:
    for binary in ("/usr/sbin/nginx", "/usr/bin/nginx"):
        if Path(binary).exists():
            try:
                out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
                return out.stderr.strip().removeprefix("nginx version: ")
            except (OSError, subprocess.SubprocessError):
                return "unknown"
    return "not installed"
