"""deploy/kubernetes read as a platform engineer would, with no cluster: every overlay is
rendered by `kubectl kustomize`, validated offline against the Kubernetes OpenAPI schemas
(kubernetes-validate ships them), and checked for what the README promises: probes,
requests and limits, non-root containers, no secret values, who may talk to whom, one
model-server replica per router entry, and each overlay's model server."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml

from tests.support import REPO

KUSTOMIZE = REPO / "deploy" / "kubernetes"
OVERLAYS = ("laptop", "gpu-vllm", "gpu-llama-server")
NAMESPACE = "parlor"
# The oldest Kubernetes release these manifests promise to work on, and the newest whose
# schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", "latest")
# The Secrets the manifests reference; the README says how to create each one.
SECRETS = {"parlor-internal", "parlor-chat-ui", "parlor-database"}
TLS_SECRET = "parlor-tls"
# Containers whose root filesystem stays writable, with the reason in the manifest.
WRITABLE_ROOT = {("model-server", "vllm")}

Doc = dict[str, Any]


@cache
def kubectl() -> str:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed (it carries kustomize: `kubectl kustomize`)")
    return binary


@cache
def render(target: str) -> tuple[Doc, ...]:
    path = KUSTOMIZE / target
    done = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    docs = tuple(d for d in yaml.safe_load_all(done.stdout) if d)
    assert docs, f"{path} rendered nothing"
    return docs


def of_kind(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(docs: tuple[Doc, ...]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Doc) -> list[Doc]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def env_value(container: Doc, name: str) -> str:
    value = env_of(container)[name].get("value")
    assert isinstance(value, str), f"{name} has no literal value"
    return value


def arg(container: Doc, flag: str) -> str:
    """The value of `--flag=value` in a container's args."""
    for a in container.get("args", []):
        if a.startswith(flag + "="):
            return str(a.split("=", 1)[1])
    raise AssertionError(f"{container['name']} has no {flag}=")


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def component(workload: Doc) -> str:
    return pod_labels(workload)["app.kubernetes.io/component"]


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector matches these labels (matchLabels and In/NotIn/Exists)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


# ---- rendering and schemas --------------------------------------------------------------


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_renders_and_matches_the_kubernetes_schemas(target: str, version: str) -> None:
    import kubernetes_validate

    wanted = kubernetes_validate.latest_version() if version == "latest" else version
    docs = render(target)
    errors = []
    for doc in docs:
        try:
            # strict: an unknown field (a typo, a misplaced key) is an error too.
            kubernetes_validate.validate(doc, wanted, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']} {where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_schema_validation_catches_a_mistake() -> None:
    """The validator really looks: a misspelt field in a rendered Deployment fails it."""
    import kubernetes_validate

    deployment = dict(one(render("overlays/laptop"), "Deployment", "chat-ui"))
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), True)


# ---- what every overlay must hold -------------------------------------------------------


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> tuple[Doc, ...]:
    return render(f"overlays/{request.param}")


def test_everything_in_the_parlor_namespace_which_enforces_restricted_pods(
    docs: tuple[Doc, ...],
) -> None:
    ns = one(docs, "Namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]


def test_every_service_workload_has_probes_on_health(docs: tuple[Doc, ...]) -> None:
    long_running = [w for w in workloads(docs) if w["kind"] != "Job"]
    assert {component(w) for w in long_running} == {
        "chat-ui",
        "db-api",
        "lm-router",
        "model-server",
    }
    for w in long_running:
        for c in pod_spec(w)["containers"]:
            where = f"{w['metadata']['name']}/{c['name']}"
            ready, live = c.get("readinessProbe"), c.get("livenessProbe")
            assert ready and live, f"{where} lacks a readiness or liveness probe"
            assert ready["httpGet"]["path"] == "/health", where
            # Liveness never depends on another service (a db outage must not restart
            # chat_ui): /health where it is the service's own state, /metrics otherwise.
            assert live["httpGet"]["path"] in ("/health", "/metrics"), where
            ports = {p["name"] for p in c["ports"]}
            for probe in (ready, live, c.get("startupProbe")):
                if probe:
                    assert probe["httpGet"]["port"] in ports, where


def test_every_container_has_requests_and_limits(docs: tuple[Doc, ...]) -> None:
    for w in workloads(docs):
        for c in containers(w):
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), (
                    f"{w['metadata']['name']}/{c['name']} lacks cpu/memory {kind}"
                )


def test_every_pod_runs_as_non_root_with_nothing_extra(docs: tuple[Doc, ...]) -> None:
    for w in workloads(docs):
        spec = pod_spec(w)
        pod_ctx = spec.get("securityContext", {})
        name = w["metadata"]["name"]
        assert pod_ctx.get("runAsNonRoot") is True, name
        assert pod_ctx.get("runAsUser", 0) > 0, name
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        assert not any("hostPath" in v for v in spec.get("volumes", [])), name
        for c in containers(w):
            ctx = c.get("securityContext", {})
            where = f"{name}/{c['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add"), where
            assert not ctx.get("privileged"), where
            assert ctx.get("runAsUser", 1) != 0, where
            writable = (name, c["name"]) in WRITABLE_ROOT
            assert ctx.get("readOnlyRootFilesystem") is (not writable), where


def test_images_are_pinned(docs: tuple[Doc, ...]) -> None:
    for w in workloads(docs):
        for c in containers(w):
            image = c["image"]
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), image


def test_no_secret_values_anywhere(docs: tuple[Doc, ...]) -> None:
    assert not of_kind(docs, "Secret"), "a Secret object would commit its values"
    referenced = set()
    for w in workloads(docs):
        for c in containers(w):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add(ref["name"])
                elif re.search(
                    r"(TOKEN|SECRET|SECRET_KEY|PASSWORD|API_KEY|DATABASE_URL)$", e["name"]
                ):
                    pytest.fail(f"{c['name']}: {e['name']} is a literal, not a Secret reference")
            assert not c.get("envFrom"), "envFrom hides what a container receives"
    assert referenced == SECRETS
    tls = {t["secretName"] for i in of_kind(docs, "Ingress") for t in i["spec"].get("tls", [])}
    assert tls <= {TLS_SECRET}
    # Where a ConfigMap holds text, it holds no key or password either.
    for cm in of_kind(docs, "ConfigMap"):
        for text in cm.get("data", {}).values():
            assert not re.search(r"(?i)(password|api[_-]?key|secret)\s*[=:]", text), cm


def test_the_readme_says_how_to_create_each_secret() -> None:
    readme = (REPO / "README.md").read_text()
    for name in sorted(SECRETS):
        assert re.search(rf"kubectl .*create secret generic {name}\b", readme), name


def test_postgresql_is_outside_and_migrated_by_a_job(docs: tuple[Doc, ...]) -> None:
    # No hand-made database: the only StatefulSet is the model server.
    assert [s["metadata"]["name"] for s in of_kind(docs, "StatefulSet")] == ["model-server"]
    for w in workloads(docs):
        assert not any("postgres" in c["image"] for c in containers(w))
    job = one(docs, "Job", "migrate")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "db_api.migrate"]
    assert env_of(c)["DB_API_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == (
        "parlor-database"
    )


def test_services_reach_their_pods(docs: tuple[Doc, ...]) -> None:
    pods = [(w, pod_labels(w)) for w in workloads(docs) if w["kind"] != "Job"]
    for svc in of_kind(docs, "Service"):
        matched = [
            w for w, labels in pods if selects({"matchLabels": svc["spec"]["selector"]}, labels)
        ]
        assert len(matched) == 1, svc["metadata"]["name"]
        port_names = {p["name"] for c in pod_spec(matched[0])["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names, svc["metadata"]["name"]
    ingress = one(docs, "Ingress", "parlor")
    backends = {
        p["backend"]["service"]["name"]
        for r in ingress["spec"]["rules"]
        for p in r["http"]["paths"]
    }
    assert backends == {"chat-ui"}


def test_autoscaling(docs: tuple[Doc, ...]) -> None:
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")
    }
    one_machine = one(docs, "StatefulSet", "model-server")["spec"]["replicas"] == 1
    if one_machine:  # laptop: one replica each, nothing to scale
        assert not hpas
        for name in ("chat-ui", "db-api", "lm-router"):
            assert one(docs, "Deployment", name)["spec"]["replicas"] == 1
        return
    assert set(hpas) == {"chat-ui", "db-api"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["minReplicas"] >= 2
        # The HPA owns the count: a `replicas` in the Deployment would fight it on apply.
        assert "replicas" not in one(docs, "Deployment", name)["spec"]


# ---- who may talk to whom ---------------------------------------------------------------


def _peers(docs: tuple[Doc, ...], labels: dict[str, str], direction: str) -> set[str]:
    """Everything the NetworkPolicies let pods with `labels` receive from ("ingress") or
    send to ("egress"): components of this namespace, other namespaces' pods, addresses."""
    pods = {component(w): pod_labels(w) for w in workloads(docs)}
    allowed: set[str] = set()
    for policy in of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        if direction.capitalize() not in spec["policyTypes"]:
            continue
        if not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get(direction, []):
            key = "from" if direction == "ingress" else "to"
            assert rule.get(key), f"{policy['metadata']['name']}: a rule open to everyone"
            ports = sorted(f"{p['protocol']}/{p['port']}" for p in rule.get("ports", []))
            assert ports, f"{policy['metadata']['name']}: a rule open on every port"
            for peer in rule[key]:
                if "ipBlock" in peer:
                    allowed.add(f"ip:{peer['ipBlock']['cidr']} {','.join(ports)}")
                elif "namespaceSelector" in peer:
                    ns = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    sel = peer.get("podSelector", {}).get("matchLabels", {})
                    allowed.add(f"ns:{ns} {sel} {','.join(ports)}")
                else:
                    hit = sorted(c for c, lab in pods.items() if selects(peer["podSelector"], lab))
                    assert hit, f"{policy['metadata']['name']}: a peer that selects no pod"
                    allowed.update(f"{c} {','.join(ports)}" for c in hit)
    return allowed


DNS = "ns:kube-system {'k8s-app': 'kube-dns'} TCP/53,UDP/53"


def test_default_deny(docs: tuple[Doc, ...]) -> None:
    deny = one(docs, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_only_the_ingress_controller_reaches_chat_ui(docs: tuple[Doc, ...]) -> None:
    labels = pod_labels(one(docs, "Deployment", "chat-ui"))
    assert _peers(docs, labels, "ingress") == {
        "ns:ingress-nginx {'app.kubernetes.io/name': 'ingress-nginx'} TCP/8000"
    }
    assert _peers(docs, labels, "egress") == {DNS, "db-api TCP/8000", "lm-router TCP/8080"}


def test_only_chat_ui_reaches_db_api_and_db_api_only_postgres(docs: tuple[Doc, ...]) -> None:
    labels = pod_labels(one(docs, "Deployment", "db-api"))
    assert _peers(docs, labels, "ingress") == {"chat-ui TCP/8000"}
    egress = _peers(docs, labels, "egress") - {DNS}
    assert len(egress) == 1 and next(iter(egress)).endswith("TCP/5432"), egress
    # The migrate Job has the same way to the database, and no other.
    job = pod_labels(one(docs, "Job", "migrate"))
    assert _peers(docs, job, "egress") - {DNS} == egress
    assert _peers(docs, job, "ingress") == set()


def test_only_chat_ui_reaches_the_model_servers_through_the_router(
    docs: tuple[Doc, ...],
) -> None:
    router = pod_labels(one(docs, "Deployment", "lm-router"))
    assert _peers(docs, router, "ingress") == {"chat-ui TCP/8080"}
    assert _peers(docs, router, "egress") == {DNS, "model-server TCP/8000"}
    model = pod_labels(one(docs, "StatefulSet", "model-server"))
    assert _peers(docs, model, "ingress") == {"lm-router TCP/8000"}
    # A model server reaches nothing; only the one-shot download goes out, to HTTPS.
    assert _peers(docs, model, "egress") == {DNS}
    fetch = pod_labels(one(docs, "Job", "model-fetch"))
    (out,) = _peers(docs, fetch, "egress") - {DNS}
    assert out == "ip:0.0.0.0/0 TCP/443"


# ---- the model router and the model servers ---------------------------------------------


def router_servers(docs: tuple[Doc, ...]) -> list[str]:
    (cm,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("lm-router")]
    conf = cm["data"]["servers.conf"]
    return [line for line in conf.splitlines() if line.startswith("server ")]


def test_the_router_lists_every_model_server_replica_by_name(docs: tuple[Doc, ...]) -> None:
    sts = one(docs, "StatefulSet", "model-server")
    headless = one(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"].get("publishNotReadyAddresses") is False
    port = sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    expected = [
        f"{sts['metadata']['name']}-{i}.{headless['metadata']['name']}.{NAMESPACE}"
        f".svc.cluster.local:{port}"
        for i in range(sts["spec"]["replicas"])
    ]
    lines = router_servers(docs)
    assert [line.split()[1] for line in lines] == expected
    assert all(" resolve" in line for line in lines), "pod IPs change: names must be re-resolved"

    (cm,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("lm-router")]
    nginx = cm["data"]["nginx.conf"]
    assert "hash $parlor_route_key consistent;" in nginx
    assert re.search(r"map \$http_x_chat_id \$parlor_route_key", nginx)
    assert "include /etc/nginx/router/servers.conf;" in nginx
    router = one(docs, "Deployment", "lm-router")
    mounts = {
        m["name"]: m["mountPath"]
        for m in router["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts["config"] == "/etc/nginx/router"
    volumes = {v["name"]: v for v in router["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]


def test_chat_ui_reaches_the_model_server_through_the_router(docs: tuple[Doc, ...]) -> None:
    chat_ui = one(docs, "Deployment", "chat-ui")["spec"]["template"]["spec"]["containers"][0]
    url = env_value(chat_ui, "CHAT_UI_LM_API_URL")
    match = re.fullmatch(r"http://([a-z-]+):(\d+)/v1", url)
    assert match, url
    svc = one(docs, "Service", match[1])
    assert int(match[2]) in {p["port"] for p in svc["spec"]["ports"]}
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "lm-router"
    assert env_value(chat_ui, "CHAT_UI_DB_API_URL") == "http://db-api:8000"


def model_server(docs: tuple[Doc, ...]) -> Doc:
    (c,) = pod_spec(one(docs, "StatefulSet", "model-server"))["containers"]
    container: Doc = c
    return container


def test_laptop_runs_lm_api_on_the_cpu() -> None:
    docs = render("overlays/laptop")
    c = model_server(docs)
    assert c["image"].startswith("parlor/lm_api:")
    assert not any("nvidia.com/gpu" in c["resources"][k] for k in ("requests", "limits"))
    assert env_of(c)["LM_API_INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == (
        "parlor-internal"
    )
    threads = int(env_value(c, "LM_API_N_THREADS"))
    assert threads <= int(c["resources"]["limits"]["cpu"]), "more threads than CPUs is slower"
    # The model lm_api loads is the one model-fetch downloads.
    fetch = one(docs, "Job", "model-fetch")["spec"]["template"]["spec"]["containers"][0]
    name = next(a for a in fetch["command"] if a.startswith("--name=")).split("=", 1)[1]
    assert env_value(c, "LM_API_MODEL_PATH") == f"/models/{name}"


def test_gpu_vllm_requests_a_gpu_and_chat_ui_is_pointed_at_vllm() -> None:
    docs = render("overlays/gpu-vllm")
    c = model_server(docs)
    assert c["image"].startswith("vllm/vllm-openai:")
    assert c["command"] == ["vllm", "serve"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert env_of(c)["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "parlor-internal"
    assert "--enable-prefix-caching" in c["args"]
    # chat_ui asks for the model vLLM serves and knows its context size.
    chat_ui = one(docs, "Deployment", "chat-ui")["spec"]["template"]["spec"]["containers"][0]
    assert env_value(chat_ui, "CHAT_UI_MODEL") == arg(c, "--served-model-name")
    assert env_value(chat_ui, "CHAT_UI_CONTEXT_TOKENS") == arg(c, "--max-model-len")
    # The weights vLLM loads are the ones model-fetch downloads.
    fetch = one(docs, "Job", "model-fetch")["spec"]["template"]["spec"]["containers"][0]
    assert f'local_dir="{c["args"][0]}"' in fetch["command"][-1]
    assert (
        len(router_servers(docs))
        == one(docs, "StatefulSet", "model-server")["spec"]["replicas"]
        >= 2
    )
    assert one(docs, "PersistentVolumeClaim", "models")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_gpu_llama_server_requests_a_gpu_and_chat_ui_is_pointed_at_it() -> None:
    docs = render("overlays/gpu-llama-server")
    c = model_server(docs)
    assert c["image"].startswith("ghcr.io/ggml-org/llama.cpp:server-cuda-")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env_of(c)["LLAMA_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "parlor-internal"
    chat_ui = one(docs, "Deployment", "chat-ui")["spec"]["template"]["spec"]["containers"][0]
    assert env_value(chat_ui, "CHAT_UI_MODEL") == arg(c, "--alias")
    # Each of llama-server's slots gets ctx-size / parallel tokens.
    per_slot = int(arg(c, "--ctx-size")) // int(arg(c, "--parallel"))
    assert int(env_value(chat_ui, "CHAT_UI_CONTEXT_TOKENS")) == per_slot
    fetch = one(docs, "Job", "model-fetch")["spec"]["template"]["spec"]["containers"][0]
    name = next(a for a in fetch["command"] if a.startswith("--name=")).split("=", 1)[1]
    assert arg(c, "--model") == f"/models/{name}"
    assert (
        len(router_servers(docs))
        == one(docs, "StatefulSet", "model-server")["spec"]["replicas"]
        >= 2
    )


def test_the_laptop_database_is_cloudnativepg_and_the_gpu_ones_an_address() -> None:
    laptop = pod_labels(one(render("overlays/laptop"), "Deployment", "db-api"))
    assert _peers(render("overlays/laptop"), laptop, "egress") - {DNS} == {
        "ns:parlor-db {'cnpg.io/cluster': 'parlor-db'} TCP/5432"
    }
    for overlay in ("gpu-vllm", "gpu-llama-server"):
        docs = render(f"overlays/{overlay}")
        egress = _peers(docs, pod_labels(one(docs, "Deployment", "db-api")), "egress") - {DNS}
        (rule,) = egress
        assert rule.startswith("ip:") and rule.endswith("/32 TCP/5432"), rule
