"""HTTP load on a page: wrk from Debian when installed, else a small Python generator."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

import httpx

from bench.stats import percentile

WRK = "/usr/bin/wrk"


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise ValueError(f"unreadable wrk output:\n{output}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return LoadResult(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), errors, "wrk")


def wrk_available() -> bool:
    return shutil.which("wrk") is not None or shutil.which(WRK) is not None


def load(url: str, *, connections: int, duration_s: int, cookie: str | None) -> LoadResult:
    if wrk_available():
        return _wrk(url, connections=connections, duration_s=duration_s, cookie=cookie)
    return asyncio.run(_python_load(url, connections, duration_s, cookie))


def _wrk(url: str, *, connections: int, duration_s: int, cookie: str | None) -> LoadResult:
    binary = shutil.which("wrk") or WRK
    cmd = [binary, "-t2", f"-c{connections}", f"-d{duration_s}s", "--latency", "--timeout", "10s"]
    if cookie:
        cmd += ["-H", f"Cookie: {cookie}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration_s + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.stderr or out.stdout}")
    return parse_wrk(out.stdout)


async def _python_load(
    url: str, connections: int, duration_s: int, cookie: str | None
) -> LoadResult:
    """`connections` keep-alive clients requesting `url` back to back for `duration_s`."""
    headers = {"Cookie": cookie} if cookie else {}
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=10.0) as client:
        end = time.perf_counter() + duration_s

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    r = await client.get(url)
                    ok = r.status_code < 400
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - t0) * 1000.0)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return LoadResult(
        len(latencies) / elapsed,
        percentile(latencies, 50),
        percentile(latencies, 99),
        errors,
        "python",
    )
