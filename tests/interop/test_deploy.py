"""The deployment files, checked against their formats' schemas: the Kubernetes manifests
(deploy/kubernetes) against Kubernetes's OpenAPI schemas, strictly (an unknown field is an
error), and the three-replica Compose file (deploy/compose) against the Compose
specification. Neither a cluster nor a Docker daemon is available here; what these checks
cannot see (images pulling, pods scheduling) is not claimed."""

from __future__ import annotations

import json
import pathlib

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose

ROOT = pathlib.Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy/kubernetes"
COMPOSE = ROOT / "deploy/compose/compose.yaml"


def manifests() -> list[dict]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d]
    return docs


def test_every_kubernetes_manifest_is_valid_and_listed():
    docs = manifests()
    listed = set(yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33", strict=True)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "basalt") in kinds and ("HorizontalPodAutoscaler", "basalt") in kinds


def test_the_validator_would_catch_a_mistake():
    statefulset = next(d for d in manifests() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "basalt")
    statefulset["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, "1.33", strict=True)


def test_replicas_are_wired_as_one_platform():
    statefulset = next(d for d in manifests() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "basalt")
    pod = statefulset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    for name in ("BASALT_DATABASE_URL", "BASALT_REDIS_URL", "BASALT_SECRET_KEY", "BASALT_REPLICA_ID",
                 "BASALT_ADVERTISE_URL", "BASALT_DATA_DIR"):
        assert name in env, name
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The advertised address resolves through the headless service named by the set.
    peers = statefulset["spec"]["serviceName"]
    assert f".{peers}:" in env["BASALT_ADVERTISE_URL"]["value"]
    hpa = next(d for d in manifests() if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "basalt_queue_depth"


def test_the_compose_file_follows_the_compose_specification():
    # YAML merge keys are resolved by the YAML parser, as Compose's own loader does.
    spec = yaml.safe_load(COMPOSE.read_text())
    spec = {k: v for k, v in spec.items() if not k.startswith("x-")}
    compose = PyCompose.from_json(json.dumps(spec))
    services = compose.to_dict()["services"]
    replicas = [name for name in services if name.startswith("basalt-")]
    assert len(replicas) == 3
    for name in replicas:
        env = services[name]["environment"]
        assert env["BASALT_REPLICA_ID"] == name
        assert env["BASALT_ADVERTISE_URL"] == f"http://{name}:8080"
        assert env["BASALT_DATABASE_URL"].startswith("postgres://")
    with pytest.raises(ValueError):
        PyCompose.from_json(json.dumps({"services": {"basalt": {"imagee": "basalt"}}}))


def test_the_image_runs_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and not users[-1].startswith(("0", "root"))
    assert dockerfile[[i for i, l in enumerate(dockerfile) if l.startswith("FROM ")][-1]].startswith("FROM debian:")
