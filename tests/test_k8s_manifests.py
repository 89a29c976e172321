"""The Kubernetes manifests: every overlay renders, is valid, and says what the worker reads.

Each kustomization under ``deploy/k8s`` is rendered with ``kubectl kustomize``
(or a standalone ``kustomize build``; ``make test`` installs one of them) and
every object that is not a custom resource is validated against the
Kubernetes OpenAPI schemas (``kubernetes-validate``, strict: unknown fields
are errors). KEDA's ScaledObject is a CRD and is checked by hand. Then the
properties that a wrong edit would silently break: the ConfigMap holds only
settings the worker reads, with values it accepts; the PVC template is
mounted at the data directory; the probes hit the worker's real web port and
paths; the GPU overlay asks for a GPU; the remote-encoder overlay points the
workers at the TEI Service; no autoscaler goes past the partition count.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if path.is_dir())
KUSTOMIZATIONS = ["base", *(f"overlays/{overlay}" for overlay in OVERLAYS)]
#: The oldest Kubernetes still commonly run and the newest the schemas know.
K8S_VERSIONS = ("1.31.0", "1.37.0")
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}
METRICS_SOURCE = (REPO / "streams" / "metrics.py").read_text(encoding="utf-8")


@functools.cache
def renderer() -> list[str] | None:
    """The command that renders a kustomization (a directory is appended), or None."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        version = subprocess.run(
            [kubectl, "version", "--client"], capture_output=True, text=True, timeout=60
        ).stdout
        if re.search(r"Kustomize Version: v[5-9]", version):  # components need kustomize v5
            return [kubectl, "kustomize"]
    for kustomize in (REPO / ".cache" / "bin" / "kustomize", shutil.which("kustomize")):
        if kustomize and Path(kustomize).is_file():
            return [str(kustomize), "build"]
    return None


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    command = renderer()
    if command is None:
        pytest.skip(
            "neither kubectl (with kustomize v5) nor kustomize was found; `make test` installs one"
        )
    result = subprocess.run(
        [*command, str(K8S / kustomization)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{' '.join(command)} {kustomization}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(objects: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def worker_config(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The data of the ConfigMap the worker container takes its environment from."""
    container = worker_container(objects)
    names = [source["configMapRef"]["name"] for source in container["envFrom"]]
    maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    assert names and all(name in maps for name in names), f"missing ConfigMaps {names}"
    return {key: value for name in names for key, value in maps[name]["data"].items()}


def worker_container(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    containers = one(objects, "StatefulSet", "driftrec")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "worker")


@pytest.fixture(params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, tuple[dict[str, Any], ...]]:
    return request.param, render(request.param)


def test_the_overlays_are_all_here() -> None:
    assert {"base", "overlays/gpu", "overlays/remote-encoder", "overlays/keda"} <= set(
        KUSTOMIZATIONS
    )
    assert "overlays/hpa" in KUSTOMIZATIONS


def test_every_object_is_valid_for_kubernetes(rendered: Any) -> None:
    import kubernetes_validate

    name, objects = rendered
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = "/".join(str(p) for p in error.path)
                pytest.fail(
                    f"{name}: {obj['kind']} {obj['metadata']['name']} is invalid for "
                    f"Kubernetes {version} at {path}: {error.message}"
                )


def test_the_configmap_holds_only_settings_the_worker_reads(rendered: Any) -> None:
    name, objects = rendered
    fields = {f"DRIFTREC_{field.upper()}" for field in WorkerSettings.model_fields}
    for config_map in (o for o in objects if o["kind"] == "ConfigMap"):
        unknown = set(config_map["data"]) - fields
        assert not unknown, f"{name}: settings no worker reads: {sorted(unknown)}"
    config = worker_config(objects)
    settings = worker_settings(objects)
    assert settings.data_dir == Path(config["DRIFTREC_DATA_DIR"])
    # The credentials come from the Secret, never from the ConfigMap.
    assert not {k for k in config if "PASSWORD" in k}
    env = {e["name"]: e for e in worker_container(objects).get("env", [])}
    assert env["DRIFTREC_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "driftrec-kafka"


def worker_settings(objects: list[dict[str, Any]]) -> WorkerSettings:
    """What a worker of these manifests reads: its ConfigMap, and stand-ins for its Secrets."""
    fields = _as_fields(worker_config(objects))
    for env in worker_container(objects).get("env", []):
        if "secretKeyRef" in env.get("valueFrom", {}):
            fields[env["name"].removeprefix("DRIFTREC_").lower()] = "from-a-secret"
    return WorkerSettings(_env_file=None, **fields)


def _as_fields(config: dict[str, str]) -> dict[str, Any]:
    """ConfigMap entries as WorkerSettings keyword arguments (strings, parsed like env vars)."""
    fields: dict[str, Any] = {}
    for key, value in config.items():
        field = key.removeprefix("DRIFTREC_").lower()
        fields[field] = value
    return fields


def test_the_statefulset_keeps_state_per_pod_and_stops_gracefully(rendered: Any) -> None:
    name, objects = rendered
    statefulset = one(objects, "StatefulSet", "driftrec")
    spec = statefulset["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    headless = one(objects, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    templates = {t["metadata"]["name"]: t for t in spec["volumeClaimTemplates"]}
    assert "ReadWriteOnce" in templates["data"]["spec"]["accessModes"]
    mounts = {m["name"]: m["mountPath"] for m in worker_container(objects)["volumeMounts"]}
    assert mounts["data"] == worker_config(objects)["DRIFTREC_DATA_DIR"]
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    commit_s = worker_settings(objects).commit_interval_s
    assert 30 <= grace <= 600 and grace > 10 * commit_s, f"{name}: grace period {grace} s"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        spec["template"]["metadata"]["labels"].items()
    )
    resources = worker_container(objects)["resources"]
    assert resources["requests"]["cpu"] and resources["limits"]["memory"]


def test_probes_and_services_use_the_workers_web_port_and_real_paths(rendered: Any) -> None:
    name, objects = rendered
    container = worker_container(objects)
    web_port = int(worker_config(objects)["DRIFTREC_WEB_PORT"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container[probe_name]["httpGet"]
        port = ports.get(probe["port"], probe["port"])
        assert port == web_port, f"{name}: {probe_name} on {port}, the worker serves {web_port}"
        assert f'@app.page("{probe["path"]}")' in METRICS_SOURCE, f"no view at {probe['path']}"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    metrics = one(objects, "Service", "driftrec-metrics")
    target = metrics["spec"]["ports"][0]["targetPort"]
    assert ports.get(target, target) == web_port
    assert '@app.page("/metrics")' in METRICS_SOURCE


def test_autoscalers_stay_within_the_partitions(rendered: Any) -> None:
    name, objects = rendered
    config = worker_config(objects)
    partitions = int(config["DRIFTREC_PARTITIONS"])
    settings = worker_settings(objects)
    for scaled in (o for o in objects if o["kind"] == "ScaledObject"):
        spec = scaled["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": "driftrec",
        }
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        metadata = trigger["metadata"]
        assert metadata["consumerGroup"] == settings.app_id
        assert metadata["topic"] == settings.topic("events")
        assert metadata["bootstrapServers"] == settings.kafka_bootstrap
        assert int(metadata["lagThreshold"]) > 0
        assert metadata.get("allowIdleConsumers", "false") == "false"
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        spec = hpa["spec"]
        assert spec["scaleTargetRef"]["kind"] == "StatefulSet"
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"] <= partitions
        assert spec["metrics"][0]["pods"]["metric"]["name"] == "driftrec_consumer_lag"
        assert '"driftrec_consumer_lag"' in METRICS_SOURCE
    if name == "overlays/keda":
        one(objects, "ScaledObject")
    if name == "overlays/hpa":
        one(objects, "HorizontalPodAutoscaler")


def test_the_gpu_overlay_runs_the_encoder_on_a_gpu() -> None:
    objects = render("overlays/gpu")
    container = worker_container(objects)
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert worker_config(objects)["DRIFTREC_DEVICE"] == "cuda"
    assert container["image"].endswith("-cuda")
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    base = worker_config(render("base"))
    assert int(worker_config(objects)["DRIFTREC_ENCODE_BATCH_SIZE"]) > int(
        base["DRIFTREC_ENCODE_BATCH_SIZE"]
    )
    assert "nvidia.com/gpu" not in str(render("base"))


def test_the_remote_encoder_overlay_points_the_workers_at_tei() -> None:
    objects = render("overlays/remote-encoder")
    config = worker_config(objects)
    assert config["DRIFTREC_ENCODER_BACKEND"] == "remote"
    assert config["DRIFTREC_ENCODER_API"] == "tei"
    url = re.fullmatch(
        r"http://([a-z0-9-]+)(\.[a-z0-9.-]+)?:(\d+)/?", config["DRIFTREC_ENCODER_URL"]
    )
    assert url, config["DRIFTREC_ENCODER_URL"]
    service = one(objects, "Service", url.group(1))
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == int(url.group(3))]
    deployment = one(objects, "Deployment", "driftrec-encoder")
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (tei,) = pod["spec"]["containers"]
    assert "text-embeddings-inference" in tei["image"]
    tei_ports = {p["name"]: p["containerPort"] for p in tei["ports"]}
    assert f"--port={tei_ports[port['targetPort']]}" in tei["args"]
    assert tei["readinessProbe"]["httpGet"]["path"] == "/health"
    settings = WorkerSettings(**_as_fields(config))
    assert settings.encoder_url == config["DRIFTREC_ENCODER_URL"]


def test_the_sasl_ssl_overlay_mounts_the_ca_and_reads_the_credentials_from_secrets() -> None:
    objects = render("overlays/sasl-ssl")
    config = worker_config(objects)
    settings = worker_settings(objects)
    assert settings.security_protocol == "SASL_SSL"
    assert settings.sasl_mechanism == "SCRAM-SHA-512"
    container = worker_container(objects)
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    ca_dir, ca_file = str(settings.ssl_cafile).rsplit("/", 1)
    (name,) = [n for n, path in mounts.items() if path == ca_dir]
    assert ca_file in {item["path"] for item in volumes[name]["secret"]["items"]}
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert (
        secrets["DRIFTREC_SASL_USERNAME"] == secrets["DRIFTREC_SASL_PASSWORD"] == "driftrec-kafka"
    )
    assert "DRIFTREC_SASL_PASSWORD" not in config  # never in the ConfigMap
