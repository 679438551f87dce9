"""The Kubernetes manifests in deploy/k8s/: valid against the Kubernetes schemas
(``kubernetes-validate``, strict), and pointing at endpoints and settings the app has."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from app.main import create_app
from tests.helpers import ROOT, make_settings

K8S = ROOT / "deploy" / "k8s"
VERSION = kubernetes_validate.latest_version()


def _load(name: str) -> dict:
    (doc,) = list(yaml.safe_load_all((K8S / name).read_text()))
    return doc


@pytest.mark.parametrize("name", ["deployment.yaml", "service.yaml", "hpa.yaml"])
def test_manifest_is_valid_kubernetes(name):
    kubernetes_validate.validate(_load(name), VERSION, strict=True)


def test_kserve_inference_service_containers_are_valid_pod_containers():
    """No schema ships for KServe's CRD, so its predictor's containers (a Kubernetes container
    list) are validated as a Pod's, and its own fields checked here."""
    isvc = _load("kserve-inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "predictor"},
        "spec": {"containers": predictor["containers"]},
    }
    kubernetes_validate.validate(pod, VERSION, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail
        broken = {**pod, "spec": {"containers": [{**predictor["containers"][0], "ports": "8000"}]}}
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_probes_and_settings_name_what_the_app_serves(tiny_model_root):
    paths = set(create_app(make_settings(tiny_model_root)).openapi()["paths"])
    container = _load("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    probes = [
        container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    ]
    assert probes == ["/health/ready", "/health/ready", "/health"]
    kserve = _load("kserve-inferenceservice.yaml")["spec"]["predictor"]["containers"][0]
    assert {
        kserve["readinessProbe"]["httpGet"]["path"],
        kserve["livenessProbe"]["httpGet"]["path"],
    } <= paths
    assert set(probes) <= paths
    settings = make_settings(tiny_model_root).model_fields
    for env in container["env"]:
        assert env["name"].startswith("CIFAR10_")
        assert env["name"].removeprefix("CIFAR10_").lower() in settings
    assert container["ports"][0]["containerPort"] == kserve["ports"][0]["containerPort"] == 8000
