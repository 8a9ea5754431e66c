"""deploy/k8s and deploy/docker: nothing here talks to a cluster or builds an image.

* every manifest validates against the Kubernetes schemas (kubernetes-validate, offline,
  strict: unknown fields fail, so a misspelled key is caught) for a fixed version;
* every YAML file passes yamllint with deploy/k8s/.yamllint (warnings fail too);
* the wiring between the objects holds: the Service selects the learner pod and exposes
  5555-5557, the actors connect to the Service's name and port, the learner's keys mount
  has actors/actor.key, the ConfigMap key is the --config file, the run config loads,
  the Secrets are the ones deploy/README.md tells operators to create, and the images
  run as the user the pods expect.
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

try:
    import kubernetes_validate
except ImportError:  # fail these tests (not the whole collection) when it is missing
    kubernetes_validate = None
try:
    from yamllint import linter as yamllint_linter
    from yamllint.config import YamlLintConfig
except ImportError:
    yamllint_linter = None

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
KUBERNETES_VERSION = "1.30"  # the oldest Kubernetes the manifests promise to work on
LEARNER_PORTS = {"records": 5555, "control": 5556, "weights": 5557}


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs() -> list[tuple[str, dict]]:
    out = []
    for path in _manifest_files():
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                out.append((f"{path.name}#{i}", doc))
    return out


def _one(kind: str, name: str) -> dict:
    found = [d for _, d in _docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in deploy/k8s, found {len(found)}"
    return found[0]


def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _flags(args: list[str]) -> dict[str, str]:
    """['actor', '--learner', 'tcp://x:1', ...] -> {'--learner': 'tcp://x:1', ...}"""
    out, i = {}, 0
    while i < len(args):
        if args[i].startswith("--"):
            assert i + 1 < len(args), f"flag {args[i]} has no value"
            assert args[i] not in out, f"flag {args[i]} given twice"
            out[args[i]] = args[i + 1]
            i += 2
        else:
            i += 1
    return out


def _container(workload: dict) -> dict:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod"
    return containers[0]


def _command(workload: dict) -> list[str]:
    c = _container(workload)
    return [*c.get("command", []), *c.get("args", [])]


def _mount_of(workload: dict, volume_name: str) -> str:
    mounts = {m["name"]: m["mountPath"] for m in _container(workload).get("volumeMounts", [])}
    assert volume_name in mounts, f"volume {volume_name} is not mounted in {workload['metadata']['name']}"
    return mounts[volume_name]


def _volume(workload: dict, kind: str) -> dict:
    """The pod volume of a kind (configMap, secret); exactly one expected."""
    vols = [v for v in workload["spec"]["template"]["spec"].get("volumes", []) if kind in v]
    assert len(vols) == 1, f"{workload['metadata']['name']}: expected one {kind} volume, found {len(vols)}"
    return vols[0]


def _is_subset(small: dict, big: dict) -> bool:
    return all(big.get(k) == v for k, v in small.items())


@pytest.fixture(scope="module")
def learner():
    return _one("StatefulSet", "mouse-learner")


@pytest.fixture(scope="module")
def service():
    return _one("Service", "mouse-learner")


@pytest.fixture(scope="module")
def actors():
    return _one("Deployment", "mouse-actors")


# --- schemas and lint ------------------------------------------------------------------------

def _require_kubernetes_validate():
    if kubernetes_validate is None:
        pytest.fail("kubernetes-validate is not installed: pip install -e '.[test]'")
    versions = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    assert KUBERNETES_VERSION in versions, (
        f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for "
        f"{KUBERNETES_VERSION} (it has {sorted(versions)})")


def test_every_manifest_is_applied_by_the_kustomization():
    k = _kustomization()
    assert k["kind"] == "Kustomization"
    assert "namespace" not in k, "namespace-agnostic: choose it with kubectl -n"
    assert sorted(k["resources"]) == [p.name for p in _manifest_files()]
    for gen in k.get("configMapGenerator", []):
        for f in gen["files"]:
            assert (K8S / f.split("=")[-1]).is_file(), f"configMapGenerator file {f} is missing"
    for _, doc in _docs():
        assert "namespace" not in doc["metadata"], f"{doc['metadata']['name']}: hard-coded namespace"


@pytest.mark.parametrize("name, doc", _docs(), ids=[n for n, _ in _docs()])
def test_manifest_matches_the_kubernetes_schema(name, doc):
    _require_kubernetes_validate()
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        error = None
    except kubernetes_validate.ValidationError as e:
        error = f"at {'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
    if error:  # (outside the except: the schema dump of the chained exception is no help)
        pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']} does not match the "
                    f"Kubernetes {KUBERNETES_VERSION} schema {error}", pytrace=False)


@pytest.mark.parametrize("breakage", ["misspelled field", "wrong type"])
def test_schema_check_catches_a_broken_manifest(learner, breakage):
    """The check above would pass everything if strict mode or the schemas went missing."""
    _require_kubernetes_validate()
    broken = copy.deepcopy(learner)
    pod = broken["spec"]["template"]["spec"]
    if breakage == "misspelled field":
        pod["terminationGracePeriodSecond"] = 120
    else:
        broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_yaml_files_pass_yamllint():
    if yamllint_linter is None:
        pytest.fail("yamllint is not installed: pip install -e '.[test]'")
    conf = YamlLintConfig(file=str(K8S / ".yamllint"))
    files = sorted([*K8S.glob("*.yaml"), *K8S.glob("*.yml"), K8S / ".yamllint"])
    problems = [f"{p.relative_to(ROOT)}:{prob.line}:{prob.column}: [{prob.level}] {prob.desc} ({prob.rule})"
                for p in files for prob in yamllint_linter.run(p.read_text(), conf, str(p))]
    assert not problems, "yamllint:\n" + "\n".join(problems)


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl is not installed (it renders the kustomization offline)")
def test_kustomization_renders_what_apply_would_send():
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, f"kubectl kustomize {K8S}: {out.stderr}"
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    _require_kubernetes_validate()
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    by_kind = {d["kind"]: d for d in docs}
    assert sorted(by_kind) == ["ConfigMap", "Deployment", "Service", "StatefulSet"]
    # the generated ConfigMap (name + content hash) is the one the learner mounts
    cm = by_kind["ConfigMap"]
    assert cm["data"]["run.json"] == (K8S / "run.json").read_text()
    assert _volume(by_kind["StatefulSet"], "configMap")["configMap"]["name"] == cm["metadata"]["name"]
    assert cm["metadata"]["name"].startswith("mouse-run-config-")
    # the images are the kustomization's
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in _kustomization()["images"]}
    assert _container(by_kind["StatefulSet"])["image"] == images["mouse-learner"]
    assert _container(by_kind["Deployment"])["image"] == images["mouse-actor"]


# --- wiring ------------------------------------------------------------------------------------

def test_service_selects_the_learner_pod_and_exposes_its_three_ports(learner, service, actors):
    selector = service["spec"]["selector"]
    assert _is_subset(selector, learner["spec"]["template"]["metadata"]["labels"])
    assert not _is_subset(selector, actors["spec"]["template"]["metadata"]["labels"]), \
        "the learner Service must not select actor pods"
    assert _is_subset(learner["spec"]["selector"]["matchLabels"],
                      learner["spec"]["template"]["metadata"]["labels"])
    assert learner["spec"]["serviceName"] == service["metadata"]["name"]
    assert learner["spec"]["replicas"] == 1

    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {n: p["port"] for n, p in ports.items()} == LEARNER_PORTS
    container_ports = {p["name"]: p["containerPort"] for p in _container(learner)["ports"]}
    assert container_ports == LEARNER_PORTS
    for name, p in ports.items():
        assert p.get("protocol", "TCP") == "TCP"
        # actors add 1 and 2 to the port they are given: no remapping between Service and pod
        target = p.get("targetPort", p["port"])
        assert container_ports.get(target, target) == p["port"], f"port {name} is remapped"


def test_learner_command_config_volume_and_keys(learner):
    cmd = _command(learner)
    assert cmd[:2] == ["mouse", "learner"]
    f = _flags(cmd)
    assert f["--learner.host"] == "0.0.0.0"
    assert int(f["--learner.port"]) == LEARNER_PORTS["records"]
    assert f["--learner.auth"] == "on"

    # --config: the ConfigMap the kustomization generates, mounted so its key is the file
    config = PurePosixPath(f["--config"])
    vol = _volume(learner, "configMap")
    assert PurePosixPath(_mount_of(learner, vol["name"])) == config.parent
    generators = {g["name"]: g for g in _kustomization()["configMapGenerator"]}
    assert vol["configMap"]["name"] in generators, "the config volume names no generated ConfigMap"
    keys = [entry.split("=")[0] if "=" in entry else Path(entry).name
            for entry in generators[vol["configMap"]["name"]]["files"]]
    assert config.name in keys, f"ConfigMap keys {keys} do not include {config.name}"
    if vol["configMap"].get("items"):
        assert config.name in [i["path"] for i in vol["configMap"]["items"]]

    # --run-dir on the volume claim template's volume
    claims = [c["metadata"]["name"] for c in learner["spec"]["volumeClaimTemplates"]]
    assert len(claims) == 1
    data = PurePosixPath(_mount_of(learner, claims[0]))
    assert data in PurePosixPath(f["--run-dir"]).parents

    # --learner.keys-dir: the learner's Secret, with the actors' allow-list in actors/
    keys_vol = _volume(learner, "secret")
    assert _mount_of(learner, keys_vol["name"]) == f["--learner.keys-dir"]
    paths = {i["path"]: i["key"] for i in keys_vol["secret"]["items"]}
    assert {"learner.key", "learner.key_secret", "actors/actor.key"} <= set(paths)


def test_learner_resources_probes_and_stop(learner):
    c = _container(learner)
    assert str(c["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert str(c["resources"]["requests"]["nvidia.com/gpu"]) == "1"
    assert c["livenessProbe"]["tcpSocket"]["port"] in ("control", LEARNER_PORTS["control"])
    # the learner checkpoints on SIGTERM, then evaluates once more: give it time
    assert learner["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    env = {e["name"]: e for e in c.get("env", [])}
    assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_actors_connect_to_the_service_with_their_keys(actors, service):
    cmd = _command(actors)
    assert cmd[:2] == ["mouse", "actor"]
    f = _flags(cmd)
    assert f["--learner"] == f"tcp://{service['metadata']['name']}:{LEARNER_PORTS['records']}"
    assert "--actor-id" not in f, "the learner assigns ids: a fixed one would repeat in every pod"

    keys_vol = _volume(actors, "secret")
    assert _mount_of(actors, keys_vol["name"]) == f["--keys"]
    paths = {i["path"] for i in keys_vol["secret"]["items"]}
    assert paths == {"learner.key", "actor.key", "actor.key_secret"}

    c = _container(actors)
    assert {e["name"]: e.get("value") for e in c["env"]}["OMP_NUM_THREADS"] == "1"
    for section in ("requests", "limits"):
        assert "nvidia.com/gpu" not in c["resources"][section], "actors are CPU only"
    assert "cpu" in c["resources"]["requests"]


def test_actor_count_is_the_deployment_replicas(actors):
    replicas = actors["spec"].get("replicas")
    assert isinstance(replicas, int) and replicas >= 1, "the Deployment needs a replicas field"
    from mouse.config import load_config

    cfg = load_config(K8S / "run.json")  # also: the shipped run config loads with this code
    assert cfg.num_actors == replicas, "run.json's num_actors should match the actors' replicas"


def test_images_are_set_by_the_kustomization(learner, actors):
    names = {i["name"] for i in _kustomization()["images"]}
    assert {_container(learner)["image"], _container(actors)["image"]} == names


# --- what operators create by hand, and the images ------------------------------------------

def _readme_secret_commands() -> dict[str, set[str]]:
    """`kubectl create secret generic NAME --from-file=KEY=... ...` in deploy/README.md."""
    text = (ROOT / "deploy" / "README.md").read_text().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        if "kubectl" not in line or "create secret generic" not in line:
            continue
        words = shlex.split(line[line.index("kubectl"):], comments=True)
        name = words[words.index("generic") + 1]
        keys = set()
        for w in words:
            m = re.match(r"--from-(?:file|literal)=([^=]+)=", w)
            if m:
                keys.add(m.group(1))
        out[name] = keys
    return out


def test_secrets_are_the_ones_the_readme_creates(learner, actors):
    documented = _readme_secret_commands()
    used: dict[str, set[str]] = {}
    for w in (learner, actors):
        vol = _volume(w, "secret")["secret"]
        used.setdefault(vol["secretName"], set()).update(i["key"] for i in vol["items"])
        for e in _container(w).get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                used.setdefault(ref["name"], set()).add(ref["key"])
    for name, keys in used.items():
        assert name in documented, f"deploy/README.md has no `kubectl create secret generic {name}`"
        assert keys <= documented[name], f"secret {name}: README creates {documented[name]}, pods use {keys}"


@pytest.mark.parametrize("dockerfile", ["actor.Dockerfile", "learner.Dockerfile"])
def test_dockerfiles(dockerfile, learner, actors):
    text = (DOCKER / dockerfile).read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"{dockerfile}: COPY source {src} does not exist"
    # the pods run as the image's user
    uid = int(re.search(r"useradd .*--uid (\d+)", text).group(1))
    for w in (learner, actors):
        assert w["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    # the same torch as the dev and CI machines
    pinned = re.search(r'"torch==([^"]+)"', (ROOT / "dev.sh").read_text()).group(1)
    assert re.search(r"ARG TORCH_VERSION=(\S+)", text).group(1) == pinned
    if dockerfile == "actor.Dockerfile":
        assert "FROM python:3.11-slim" in text
        assert "download.pytorch.org/whl/cpu" in text
    else:
        assert "python3.11" in text
