"""The model router (deploy/kubernetes/base/lm-router/nginx.conf) run for real: nginx with
that very file, rendered for loopback, in front of three fake model servers.

Proves what the Kubernetes docs promise: one chat always reaches the same replica,
different chats spread over all of them, and when a replica dies only its chats move
(to the other replicas, without a failed request) while every other chat stays put.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import REPO, free_port, stop_process, wait_healthy

ROUTER = REPO / "deploy" / "kubernetes" / "base" / "lm-router"
SERVERS = ("a", "b", "c")


@dataclass
class Replica:
    port: int
    proc: subprocess.Popen[bytes]


CHATS = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(300)]


def _replace_once(text: str, old: str, new: str) -> str:
    # Exactly once: if the shipped file drifts, this test must notice rather than run
    # something else than what Kubernetes runs.
    assert text.count(old) == 1, f"expected exactly one {old!r} in nginx.conf"
    return text.replace(old, new)


def render_for_loopback(work: Path, listen_port: int, upstream_ports: list[int]) -> Path:
    """nginx.conf as shipped, with only the cluster-specific parts swapped for loopback."""
    conf = (ROUTER / "nginx.conf").read_text()
    conf = _replace_once(conf, "listen 8080;", f"listen 127.0.0.1:{listen_port};")
    # kube-dns does not exist here, and the loopback servers need no lookups.
    conf, resolvers = re.subn(r"\n\s*resolver [^;]*kube-dns[^;]*;", "\n", conf)
    assert resolvers == 1, "expected exactly one kube-dns resolver in nginx.conf"
    temp_paths = len(re.findall(r" /tmp/", conf))
    assert temp_paths >= 6, "nginx.conf's pid and temporary paths were expected under /tmp"
    conf = conf.replace(" /tmp/", f" {work}/")
    conf = _replace_once(
        conf, "include /etc/nginx/router/servers.conf;", f"include {work}/servers.conf;"
    )

    # The shipped servers.conf's parameters, on loopback addresses; `resolve` needs
    # nginx >= 1.27.3 and a DNS name, neither of which a loopback address is.
    shipped = [
        line
        for line in (ROUTER / "servers.conf").read_text().splitlines()
        if line.startswith("server ")
    ]
    assert shipped, "servers.conf lists no server"
    params = [p for p in shipped[0].rstrip(";").split()[2:] if p != "resolve"]
    lines = [f"server 127.0.0.1:{port} {' '.join(params)};" for port in upstream_ports]
    (work / "servers.conf").write_text("\n".join(lines) + "\n")
    path = work / "nginx.conf"
    path.write_text(conf)
    return path


@pytest.fixture
def fleet() -> Iterator[dict[str, Replica]]:
    """Four fake model servers, a to d, as real processes on free ports."""
    replicas: dict[str, Replica] = {}
    try:
        for name in ("a", "b", "c", "d"):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.deploy.fake_model_server", name, str(port)],
                cwd=REPO,
            )
            replicas[name] = Replica(port, proc)
        for replica in replicas.values():
            wait_healthy(f"http://127.0.0.1:{replica.port}/health", proc=replica.proc)
        yield replicas
    finally:
        for replica in replicas.values():
            stop_process(replica.proc, timeout_s=5)


@contextlib.contextmanager
def run_router(work: Path, replicas: list[Replica]) -> Iterator[httpx.Client]:
    """Real nginx with the router config in front of `replicas`."""
    from parlor.nginx import nginx_binary

    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = render_for_loopback(work, port, [r.port for r in replicas])
    base = [binary, "-e", "stderr", "-p", str(work), "-c", str(conf)]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, f"nginx -t refused the router config:\n{check.stderr}"
    log = work / "nginx.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*base, "-g", "daemon off;"], stdout=out, stderr=out)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc=proc, log=log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        stop_process(proc, timeout_s=10)


def route(client: httpx.Client, chat: str | None) -> str:
    """Which replica served a chat-completion call of `chat` (None: no X-Chat-Id)."""
    headers = {"X-Chat-Id": chat} if chat else {}
    r = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["chat"] == chat  # the header reaches the model server untouched
    return str(body["server"])


@pytest.fixture
def router(tmp_path: Path, fleet: dict[str, Replica]) -> Iterator[httpx.Client]:
    """The router in front of a, b and c (d waits for the scaling test)."""
    with run_router(tmp_path / "router", [fleet[n] for n in SERVERS]) as client:
        yield client


def test_a_chat_stays_on_its_replica_and_chats_spread(router: httpx.Client) -> None:
    first = {chat: route(router, chat) for chat in CHATS}
    again = {chat: route(router, chat) for chat in CHATS}
    assert first == again, "a chat moved between replicas with all replicas up"

    spread = Counter(first.values())
    assert set(spread) == set(SERVERS), spread
    # Ketama gives each replica 160 points: a third each, give or take; far from all
    # on one replica.
    assert min(spread.values()) >= len(CHATS) // 10, spread

    # Calls that belong to no chat (/v1/models, health checks) are spread too.
    assert len({route(router, None) for _ in range(60)}) > 1


def test_a_dead_replica_moves_only_its_own_chats(
    router: httpx.Client, fleet: dict[str, Replica]
) -> None:
    before = {chat: route(router, chat) for chat in CHATS}
    victim = "b"
    fleet[victim].proc.kill()
    fleet[victim].proc.wait(timeout=10)

    # Every call still succeeds (route() asserts 200): the router retries a refused
    # connection on the next replica of the ring, even for a POST, since nothing was sent.
    after = {chat: route(router, chat) for chat in CHATS}
    moved = {chat for chat in CHATS if after[chat] != before[chat]}

    assert moved == {chat for chat in CHATS if before[chat] == victim}
    assert moved, "the victim served no chat: the test proved nothing"
    assert all(after[chat] != victim for chat in CHATS)
    # The moved chats spread over the survivors and stay where they moved.
    assert {after[chat] for chat in moved} <= set(SERVERS) - {victim}
    assert {chat: route(router, chat) for chat in moved} == {c: after[c] for c in moved}


def test_the_ring_changes_move_only_a_share(tmp_path: Path, fleet: dict[str, Replica]) -> None:
    """What Kubernetes does to the router's list: a replica added (scale up) or one whose
    DNS record is gone (unready, scaled down; `resolve` drops it). Consistent hashing
    moves only the chats of the replica that came or went; a plain modulo hash would
    reshuffle most chats and empty every prefix cache."""
    with run_router(tmp_path / "three", [fleet[n] for n in ("a", "b", "c")]) as client:
        three = {chat: route(client, chat) for chat in CHATS}
    with run_router(tmp_path / "four", [fleet[n] for n in ("a", "b", "c", "d")]) as client:
        four = {chat: route(client, chat) for chat in CHATS}
    with run_router(tmp_path / "two", [fleet[n] for n in ("a", "c")]) as client:
        two = {chat: route(client, chat) for chat in CHATS}

    moved_to_new = {chat for chat in CHATS if four[chat] != three[chat]}
    assert moved_to_new, "the new replica got no chat"
    assert {four[chat] for chat in moved_to_new} == {"d"}, "chats moved between old replicas"
    assert len(moved_to_new) < len(CHATS) / 2, "far more than the new replica's share moved"

    moved_from_gone = {chat for chat in CHATS if two[chat] != three[chat]}
    assert moved_from_gone == {chat for chat in CHATS if three[chat] == "b"}
