"""The inference server's deployment files (deploy/), checked statically: no Docker engine and no
cluster. Each check reads a deploy folder and asserts one thing; the real deploy/ must pass every
check, and test_check_catches_a_wrong_file edits a copy to show that each check can fail."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from course_lib import serve

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
README = REPO / "README.md"

IMAGE = "open-llm-lab-serve:0.1.0"  # README's build command, deployment.yaml, kustomization.yaml
NAME = "open-llm-lab-serve"  # the Deployment, Service and HPA
UID = 1000  # the image's user and the pod's runAsUser
API_KEY_ENV = getattr(serve, "API_KEY_ENV", "OPEN_LLM_LAB_API_KEY")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# Measured, the one place these numbers live in this file (benchmarks report ru_maxrss / 2**20,
# i.e. GiB). benchmarks/serve.py's RESULT line, server_peak_rss_gib: smollm2 served with
# continuous batching up to 16 sequences (1.09 GiB on 2026-12-03; one request at a time 0.93).
STEADY_RSS_GIB = 1.09
# benchmarks/smollm2_load.py: the first load dequantizes the GGUF (only if the cache is unusable).
FIRST_LOAD_PEAK_GIB = 1.2
FIRST_LOAD_S = 20
STARTUP_HEADROOM = 3  # the startup probe allows this many first loads (slow or busy nodes)


# --- reading the files -----------------------------------------------------------------------


def dockerfile(deploy: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in (deploy / "Dockerfile").read_text().splitlines():
        if line.strip().startswith("#"):  # a comment, also inside a continued RUN
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        current = ""
    return out


def instructions(deploy: Path, name: str) -> list[str]:
    return [args for word, args in dockerfile(deploy) if word == name]


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form, got {args!r}"
    return json.loads(args)


def option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def healthcheck(deploy: Path) -> tuple[dict[str, str], list[str]]:
    """(options, command) of the one HEALTHCHECK."""
    checks = instructions(deploy, "HEALTHCHECK")
    assert len(checks) == 1, f"expected one HEALTHCHECK, found {len(checks)}"
    m = re.fullmatch(r"((?:--[\w-]+=\S+\s+)*)CMD\s+(.*)", checks[0])
    assert m, f"HEALTHCHECK must be HEALTHCHECK [--option=value ...] CMD [...], got {checks[0]!r}"
    opts = dict(o.lstrip("-").split("=", 1) for o in m.group(1).split())
    return opts, exec_form(m.group(2))


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def manifests(deploy: Path) -> dict[str, dict]:
    """Every document of deploy/kubernetes/*.yaml by kind (one of each kind expected)."""
    by_kind: dict[str, dict] = {}
    for path in sorted((deploy / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict) and doc.get("kind"), f"{path.name}: a document without a kind"
            assert doc["kind"] not in by_kind, f"{path.name}: a second {doc['kind']}"
            by_kind[doc["kind"]] = doc
    return by_kind


def container(deploy: Path) -> dict:
    containers = manifests(deploy)["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per server pod"
    return containers[0]


_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_UNITS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value) -> float:
    """A Kubernetes quantity ("1Gi", "500m", 2) as a number (bytes or cores)."""
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert m and m.group(2) in _UNITS, f"not a Kubernetes quantity: {value!r}"
    return float(m.group(1)) * _UNITS[m.group(2)]


def ignored(patterns: list[str], path: str) -> bool:
    """Whether a .dockerignore excludes ``path`` (or a folder above it): the last matching rule
    wins, ``!`` re-includes, ``*`` stays within a folder, ``**`` crosses folders."""

    def regex(pattern: str) -> re.Pattern:
        parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
        table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(table.get(p, re.escape(p)) for p in parts))

    prefixes = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = regex(pattern.lstrip("!"))
        if any(rx.fullmatch(p) for p in prefixes):
            result = not negate
    return result


# --- the checks: each takes a deploy folder and asserts -------------------------------------


def check_docker_base(deploy: Path) -> None:
    python = pyproject()["project"]["requires-python"].split(",")[0].lstrip(">=~").strip()
    froms = instructions(deploy, "FROM")
    assert froms == [f"python:{python}-slim"], f"base image must be python:{python}-slim, got {froms}"


def check_docker_pins(deploy: Path) -> None:
    """torch from the CPU index as pinned; the course and its --no-deps packages from pyproject."""
    text = " ".join(args for word, args in dockerfile(deploy) if word == "RUN")
    torch = next(d for d in pyproject()["project"]["dependencies"] if d.startswith("torch=="))
    for pinned in re.findall(r"torch==[\w.+]+", text):  # a pin written here must be pyproject's
        assert pinned == torch, f"Dockerfile pins {pinned}, pyproject.toml {torch}"
    assert TORCH_CPU_INDEX in text, "install torch from PyTorch's CPU index"
    assert "sync_env" in text and "--print-no-deps" in text and "--no-deps" in text, (
        "install the no-deps packages as scripts/setup.sh does: tools/sync_env.py --print-no-deps"
    )
    assert "aaaaaaa_future_typing.pth" in text, "remove future-typing's .pth hook as scripts/setup.sh does"
    runs = instructions(deploy, "RUN")
    install = [i for i, r in enumerate(runs) if re.search(r"pip install .*-e \.", r)]
    load = [i for i, r in enumerate(runs) if "load_smollm2()" in r]
    assert install and load and install[0] < load[0], "install the course, then build the SmolLM2 cache"


def check_docker_user(deploy: Path) -> None:
    """The last USER is uid 1000, the cache is built as that user, and the server runs as it."""
    steps = dockerfile(deploy)
    users = [i for i, (word, _) in enumerate(steps) if word == "USER"]
    assert users, "no USER: the server would run as root"
    user = steps[users[-1]][1].split(":")[0]
    assert user not in ("root", "0"), f"USER {user} is root"
    assert user == str(UID), f"USER must be the numeric uid {UID} (runAsUser in deployment.yaml), got {user}"
    load = [i for i, (word, args) in enumerate(steps) if word == "RUN" and "load_smollm2()" in args]
    assert load and load[0] > users[-1], "build the SmolLM2 cache as the server's user, who may rewrite it"
    assert f"--uid {UID}" in " ".join(instructions(deploy, "RUN")), f"create a user with uid {UID}"


def check_docker_env(deploy: Path) -> None:
    env = " ".join(instructions(deploy, "ENV"))
    assert re.search(r"(^|\s)HF_HUB_OFFLINE=1(\s|$)", env), "ENV HF_HUB_OFFLINE=1: the image runs offline"
    assert "OPEN_LLM_LAB_CACHE=" in env, "set OPEN_LLM_LAB_CACHE so the cache does not depend on $HOME"


def check_docker_port_and_cmd(deploy: Path) -> None:
    assert instructions(deploy, "EXPOSE") == [str(serve.DEFAULT_PORT)], "EXPOSE must be DEFAULT_PORT"
    cmds = instructions(deploy, "CMD")
    assert len(cmds) == 1, f"expected one CMD, found {len(cmds)}"
    argv = exec_form(cmds[0])
    assert argv[:4] == ["python", "-m", "course_lib", "serve"], f"CMD must run course_lib serve: {argv}"
    assert option(argv, "--port") == str(serve.DEFAULT_PORT), "CMD --port must be DEFAULT_PORT"
    # a container must listen on every interface, or nothing outside it reaches the server
    assert option(argv, "--host") == "0.0.0.0", "CMD --host must be 0.0.0.0"  # noqa: S104
    assert option(argv, "--model") == serve.DEFAULT_MODEL == "smollm2", "CMD serves the prebuilt SmolLM2"
    assert not instructions(deploy, "ENTRYPOINT"), "no ENTRYPOINT: CMD is the whole command"


def check_docker_healthcheck(deploy: Path) -> None:
    opts, argv = healthcheck(deploy)
    script = " ".join(argv)
    assert argv[0] == "python" and "urllib.request" in script, "check with python's urllib (no curl in slim)"
    urls = re.findall(r"https?://[^'\"\s]+", script)
    expected = f"http://127.0.0.1:{serve.DEFAULT_PORT}{serve.HEALTH_PATH}"
    assert urls == [expected], f"HEALTHCHECK must GET {expected}, got {urls}"
    assert "start-period" in opts, "give the model load a --start-period"


def check_dockerignore(deploy: Path) -> None:
    """The context filter keeps every file the Dockerfile copies and drops .venv and .git."""
    path = deploy / "Dockerfile.dockerignore"  # BuildKit's name for -f deploy/Dockerfile
    patterns = [p.strip() for p in path.read_text().splitlines() if p.strip() and not p.startswith("#")]
    for args in instructions(deploy, "COPY"):
        *sources, _ = args.split()
        for source in sources:
            assert not source.startswith("--"), f"COPY {args}: no --from/--chown expected"
            src = REPO / source
            assert src.exists(), f"COPY {source}: not in the repository"
            files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
            files = [f for f in files if "__pycache__" not in f.parts and f.suffix != ".pyc"]
            assert files, f"COPY {source}: nothing to copy"
            for f in files:
                rel = f.relative_to(REPO).as_posix()
                assert not ignored(patterns, rel), f"{path.name} drops {rel}, which COPY {source} needs"
    for heavy in (".venv/bin/python", ".git/HEAD", "my_work/x.ipynb"):
        assert ignored(patterns, heavy), f"{path.name} sends {heavy.split('/')[0]} to the builder"


def check_kustomization(deploy: Path) -> None:
    """kustomization.yaml lists every manifest of the folder and sets the same image."""
    kdir = deploy / "kubernetes"
    kust = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    files = sorted(p.name for p in kdir.glob("*.y*ml") if p.name != "kustomization.yaml")
    assert sorted(kust["resources"]) == files, f"resources {kust['resources']} != the folder's {files}"
    repo, tag = IMAGE.rsplit(":", 1)
    images = {i["name"]: i for i in kust.get("images", [])}
    assert set(images) <= {repo}, f"kustomization sets images {sorted(images)}, expected {repo}"
    if repo in images:
        assert images[repo].get("newName", repo) == repo, "kustomization renames the image"
        assert str(images[repo].get("newTag", tag)) == tag, f"kustomization tag must be {tag}"


def check_manifests(deploy: Path) -> None:
    docs = manifests(deploy)
    want = {"Deployment": "apps/v1", "Service": "v1", "HorizontalPodAutoscaler": "autoscaling/v2"}
    for kind, api in want.items():
        assert kind in docs, f"no {kind} in deploy/kubernetes"
        assert docs[kind]["apiVersion"] == api, f"{kind}: apiVersion {docs[kind]['apiVersion']}, want {api}"
        assert docs[kind]["metadata"]["name"] == NAME, f"{kind} must be named {NAME}"


def check_image(deploy: Path) -> None:
    assert container(deploy)["image"] == IMAGE, f"deployment.yaml image must be {IMAGE}"
    _, tag = IMAGE.rsplit(":", 1)
    assert tag == pyproject()["project"]["version"], "tag the image with the course's version"


def check_container_port_and_probes(deploy: Path) -> None:
    c = container(deploy)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": serve.DEFAULT_PORT}, f"one port named http = DEFAULT_PORT, got {ports}"
    assert "command" not in c and "args" not in c, "keep the Dockerfile's CMD the one serve command"
    for probe in ("readinessProbe", "livenessProbe"):
        assert probe in c, f"no {probe}"
    probes = {k: v for k, v in c.items() if k.endswith("Probe")}
    for name, probe in probes.items():
        get = probe.get("httpGet", {})
        assert get.get("path") == serve.HEALTH_PATH, f"{name} must GET {serve.HEALTH_PATH}"
        assert get.get("port") == "http", f"{name} must use the named port http"
    # A slow first load must not be killed: the startup probe (or the liveness probe's first
    # checks, without one) must wait several first loads.
    first = probes.get("startupProbe", probes["livenessProbe"])
    window = first.get("initialDelaySeconds", 0) + first.get("periodSeconds", 10) * first.get(
        "failureThreshold", 3
    )
    assert window >= STARTUP_HEADROOM * FIRST_LOAD_S, (
        f"the first /health checks give up after {window} s; a first load takes ~{FIRST_LOAD_S} s"
    )


def check_resources(deploy: Path) -> None:
    res = container(deploy)["resources"]
    request, limit = quantity(res["requests"]["memory"]), quantity(res["limits"]["memory"])
    assert request >= STEADY_RSS_GIB * 2**30, f"memory request {request / 2**30:.2f} GiB < the measured RSS"
    assert limit > request, "memory limit must exceed the request"
    assert limit >= FIRST_LOAD_PEAK_GIB * 2**30, "memory limit below the first-load peak: OOM on a cold cache"
    cpu_request, cpu_limit = quantity(res["requests"]["cpu"]), quantity(res["limits"]["cpu"])
    assert 0 < cpu_request <= cpu_limit, f"cpu request {cpu_request} must be in (0, limit {cpu_limit}]"
    env = {e["name"]: e for e in container(deploy).get("env", [])}
    threads = env.get("OMP_NUM_THREADS", {}).get("valueFrom", {}).get("resourceFieldRef", {})
    assert threads.get("resource") == "limits.cpu", (
        "OMP_NUM_THREADS from limits.cpu: torch sees the node's cores"
    )


def check_security(deploy: Path) -> None:
    pod = manifests(deploy)["Deployment"]["spec"]["template"]["spec"].get("securityContext", {})
    box = container(deploy).get("securityContext", {})
    merged = pod | box  # a container's setting wins over the pod's
    assert merged.get("runAsNonRoot") is True, "runAsNonRoot: true"
    assert merged.get("runAsUser") == UID, f"runAsUser must be {UID}, the image's user"
    assert box.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false"


def check_api_key(deploy: Path) -> None:
    env = {e["name"]: e for e in container(deploy).get("env", [])}
    assert API_KEY_ENV in env, f"no {API_KEY_ENV} in the container's env"
    ref = env[API_KEY_ENV].get("valueFrom", {}).get("secretKeyRef", {})
    assert ref.get("name") and ref.get("key"), f"{API_KEY_ENV} must come from a Secret"
    assert ref.get("optional") is True, "optional: true, so the server starts without a Secret"


def check_service(deploy: Path) -> None:
    docs = manifests(deploy)
    svc, pod = docs["Service"]["spec"], docs["Deployment"]["spec"]["template"]
    assert svc.get("type", "ClusterIP") == "ClusterIP", "the Service is ClusterIP"
    labels, selector = pod["metadata"]["labels"], svc["selector"]
    assert selector and selector.items() <= labels.items(), f"Service selects {selector}, pods are {labels}"
    match = docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert match.items() <= labels.items(), f"Deployment selector {match} does not match its pods {labels}"
    names = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert [(p["port"], p["targetPort"]) for p in svc["ports"]] == [(80, "http")], (
        "port 80 -> targetPort http"
    )
    assert "http" in names, f"the Service targets port http, the container has {sorted(names)}"


def check_hpa(deploy: Path) -> None:
    docs = manifests(deploy)
    hpa, deployment = docs["HorizontalPodAutoscaler"]["spec"], docs["Deployment"]
    ref = hpa["scaleTargetRef"]
    target = ("apps/v1", "Deployment", deployment["metadata"]["name"])
    got = (ref.get("apiVersion"), ref.get("kind"), ref.get("name"))
    assert got == target, f"the HPA scales {got}, not the Deployment {target}"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4), "scale between 1 and 4 servers"
    cpu = [m for m in hpa["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization", "scale on CPU utilization"
    assert "replicas" not in deployment["spec"], "the HPA owns replicas; `kubectl apply` would reset them"
    assert "cpu" in container(deploy)["resources"]["requests"], "CPU utilization needs a cpu request"


CHECKS = [
    check_docker_base,
    check_docker_pins,
    check_docker_user,
    check_docker_env,
    check_docker_port_and_cmd,
    check_docker_healthcheck,
    check_dockerignore,
    check_kustomization,
    check_manifests,
    check_image,
    check_container_port_and_probes,
    check_resources,
    check_security,
    check_api_key,
    check_service,
    check_hpa,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_deploy(check):
    check(DEPLOY)


LOAD = 'RUN python -c "from course_lib.data import load_smollm2; load_smollm2()"'
# (file under deploy/, text in it, replacement, the check that must then fail)
MUTATIONS = [
    ("Dockerfile", "FROM python:3.11-slim", "FROM python:3.12-slim", check_docker_base),
    (
        "Dockerfile",
        "-r /tmp/torch.txt",
        "torch" + "==0.0.1",
        check_docker_pins,
    ),  # a wrong pin (split: no pin here)
    ("Dockerfile", "--extra-index-url https://download.pytorch.org/whl/cpu ", "", check_docker_pins),
    ("Dockerfile", "USER 1000:1000", "USER root", check_docker_user),
    ("Dockerfile", f"USER 1000:1000\n{LOAD}", f"{LOAD}\nUSER 1000:1000", check_docker_user),
    ("Dockerfile", "HF_HUB_OFFLINE=1", "HF_HUB_OFFLINE=0", check_docker_env),
    ("Dockerfile", "EXPOSE 8000", "EXPOSE 8080", check_docker_port_and_cmd),
    ("Dockerfile", '"--port", "8000"]', '"--port", "8001"]', check_docker_port_and_cmd),
    ("Dockerfile", '"0.0.0.0"', '"127.0.0.1"', check_docker_port_and_cmd),
    ("Dockerfile", '"course_lib", "serve"', '"course_lib", "doctor"', check_docker_port_and_cmd),
    ("Dockerfile", "127.0.0.1:8000/health", "127.0.0.1:8000/healthz", check_docker_healthcheck),
    ("Dockerfile", "127.0.0.1:8000/health", "127.0.0.1:8080/health", check_docker_healthcheck),
    (
        "Dockerfile",
        "COPY course_lib/ course_lib/",
        "COPY course_lib/ course_lib/\nCOPY lessons/ lessons/",
        check_dockerignore,
    ),
    ("Dockerfile.dockerignore", "!course_lib/\n", "", check_dockerignore),
    ("Dockerfile.dockerignore", "*\n!pyproject.toml", "!pyproject.toml", check_dockerignore),
    ("kubernetes/kustomization.yaml", "  - hpa.yaml\n", "", check_kustomization),
    ("kubernetes/kustomization.yaml", "newTag: 0.1.0", "newTag: 0.2.0", check_kustomization),
    ("kubernetes/hpa.yaml", "autoscaling/v2", "autoscaling/v1", check_manifests),
    (
        "kubernetes/deployment.yaml",
        "image: open-llm-lab-serve:0.1.0",
        "image: open-llm-lab-serve:latest",
        check_image,
    ),
    (
        "kubernetes/deployment.yaml",
        "containerPort: 8000",
        "containerPort: 8080",
        check_container_port_and_probes,
    ),
    ("kubernetes/deployment.yaml", "path: /health", "path: /healthz", check_container_port_and_probes),
    (
        "kubernetes/deployment.yaml",
        "port: http\n            periodSeconds: 20",
        "port: 8000\n            periodSeconds: 20",
        check_container_port_and_probes,
    ),
    (
        "kubernetes/deployment.yaml",
        "failureThreshold: 24",
        "failureThreshold: 2",
        check_container_port_and_probes,
    ),
    ("kubernetes/deployment.yaml", "memory: 1280Mi", "memory: 1Gi", check_resources),
    ("kubernetes/deployment.yaml", "memory: 2Gi", "memory: 1Gi", check_resources),
    ("kubernetes/deployment.yaml", "resource: limits.cpu", "resource: requests.memory", check_resources),
    ("kubernetes/deployment.yaml", "runAsUser: 1000", "runAsUser: 0", check_security),
    (
        "kubernetes/deployment.yaml",
        "allowPrivilegeEscalation: false",
        "allowPrivilegeEscalation: true",
        check_security,
    ),
    ("kubernetes/deployment.yaml", "optional: true", "optional: false", check_api_key),
    ("kubernetes/service.yaml", "targetPort: http", "targetPort: 8080", check_service),
    (
        "kubernetes/service.yaml",
        "    app.kubernetes.io/name: open-llm-lab-serve\n  ports",
        "    app: serve\n  ports",
        check_service,
    ),
    (
        "kubernetes/hpa.yaml",
        "    name: open-llm-lab-serve\n  minReplicas",
        "    name: serve\n  minReplicas",
        check_hpa,
    ),
    ("kubernetes/hpa.yaml", "maxReplicas: 4", "maxReplicas: 40", check_hpa),
    (
        "kubernetes/deployment.yaml",
        "spec:\n  # No `replicas`",
        "spec:\n  replicas: 2\n  # No `replicas`",
        check_hpa,
    ),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "check"),
    MUTATIONS,
    ids=[f"{m[3].__name__.removeprefix('check_')}-{i}" for i, m in enumerate(MUTATIONS)],
)
def test_check_catches_a_wrong_file(tmp_path, file, old, new, check):
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    text = (copy / file).read_text()
    assert old in text, f"the mutation's text is no longer in deploy/{file}: update MUTATIONS"
    (copy / file).write_text(text.replace(old, new))
    with pytest.raises(AssertionError):
        check(copy)


# a `docker build ... -t IMAGE` command (prose that merely names `docker build` is not one)
BUILD_LINE = re.compile(r"docker build\b.*?\s(?:-t|--tag)[ =](\S+)")


def check_readme(readme: Path) -> None:
    lines = [line for line in readme.read_text().splitlines() if BUILD_LINE.search(line)]
    if not lines:
        pytest.skip("README has no docker build line yet")
    images = [BUILD_LINE.search(line).group(1) for line in lines]
    assert images == [IMAGE] * len(lines), f"README builds {images}, not {IMAGE}"
    assert all("-f deploy/Dockerfile" in line for line in lines), (
        "README: docker build -f deploy/Dockerfile ."
    )


def test_readme_build_command_uses_the_image():
    check_readme(README)


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (f"docker build -f deploy/Dockerfile -t {IMAGE} .", True),
        ("docker build -f deploy/Dockerfile -t open-llm-lab-serve:0.0.9 .", False),
        (f"docker build -t {IMAGE} .", False),
    ],
)
def test_readme_check_can_fail(tmp_path, line, ok):
    readme = tmp_path / "README.md"
    readme.write_text(f"## Deploy the server\n\n```bash\n{line}\n```\n")
    if ok:
        check_readme(readme)
    else:
        with pytest.raises(AssertionError):
            check_readme(readme)


def test_kustomize_builds():
    """Where kubectl is installed, kustomize must build the folder (offline, no cluster)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    r = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "kubernetes")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert sorted(d["kind"] for d in docs) == ["Deployment", "HorizontalPodAutoscaler", "Service"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
