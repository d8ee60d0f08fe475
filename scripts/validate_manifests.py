"""Offline validation of the deployment manifests (run through scripts/validate-manifests).

- Kubernetes objects (docker/k8s/**): strict JSON Schemas of the Kubernetes API that the PyPI
  package kubernetes-validate ships (unknown fields are errors, as with `kubectl apply`).
- Kustomizations: every resource file must exist, and each kustomization is rendered (resources,
  images, JSON 6902 patches) and the result validated too, so the GPU overlay is checked as applied.
- KServe objects (ServingRuntime, InferenceService): docker/schemas/kserve/*.json, generated from
  the KServe SDK (docker/schemas/gen-kserve-schemas.py); their Kubernetes parts (containers,
  probes, resources) resolve into the same Kubernetes schemas.
- docker/compose.yaml: the Compose Specification schema (docker/schemas/compose-spec.json).
- Project rules that a schema cannot express: probes on the health routes, resources set,
  termination grace period longer than preStop + drain, Service/HPA/InferenceService references
  that resolve, V2 protocol on port 8080, Prometheus scraping dlserve's /metrics.

Exit status 1 on any error. K8S_VERSION selects the Kubernetes API version (default 1.33).
"""
from __future__ import annotations

import copy
import json
import os
import pathlib
import sys

import importlib_resources
import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils as kv

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
K8S_VERSION = os.environ.get("K8S_VERSION", "1.33.0")
DEFAULT_DRAIN_SECS = 30  # dlserve --drain-timeout-secs default

errors: list[str] = []


def err(where: str, msg: str) -> None:
    errors.append(f"{where}: {msg}")


def load_all(path: pathlib.Path) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as e:
        err(rel(path), f"not valid YAML: {e}")
        return []


def rel(path: pathlib.Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def k8s_definitions() -> referencing.Resource:
    """The Kubernetes definitions (strict) that kubernetes-validate ships for K8S_VERSION."""
    version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(K8S_VERSION)][-1]
    ref = importlib_resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json")
    return referencing.Resource.from_contents(json.loads(ref.read_text()))


K8S_DEFS = k8s_definitions()
KSERVE_SCHEMAS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): DOCKER / "schemas/kserve/servingruntime-v1alpha1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): DOCKER / "schemas/kserve/inferenceservice-v1beta1.json",
}


def describe(e: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in e.absolute_path) or "(top)"
    # oneOf/anyOf errors: show the most specific cause.
    best = jsonschema.exceptions.best_match([e]) if e.context else e
    return f"{path}: {best.message}"


def validate_schema(where: str, doc: dict) -> None:
    api, kind = doc.get("apiVersion"), doc.get("kind")
    name = (doc.get("metadata") or {}).get("name", "?")
    where = f"{where} {kind}/{name}"
    if (api, kind) in KSERVE_SCHEMAS:
        schema = json.loads(KSERVE_SCHEMAS[(api, kind)].read_text())
        registry = referencing.Registry().with_resources([
            ("https://kubernetes.io/api/_definitions.json", K8S_DEFS),
        ])
        validator = jsonschema.Draft202012Validator(schema, registry=registry)
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            err(where, describe(e))
        return
    if str(api).startswith("serving.kserve.io"):
        err(where, f"no schema for KServe {api} {kind}")
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        err(where, describe(e))
    except kubernetes_validate.SchemaNotFoundError as e:
        err(where, e.message)


# --- kustomize (the subset these manifests use) ---------------------------------------------

def json_pointer_apply(doc: dict, op: dict, where: str) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent = doc
    try:
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if op["op"] == "add":
                parent.insert(idx, op["value"])
            elif op["op"] == "replace":
                parent[idx] = op["value"]
            elif op["op"] == "remove":
                del parent[idx]
            else:
                raise KeyError(op["op"])
        else:
            if op["op"] in ("replace", "remove") and last not in parent:
                raise KeyError(last)
            if op["op"] in ("add", "replace"):
                parent[last] = op["value"]
            elif op["op"] == "remove":
                del parent[last]
            else:
                raise KeyError(op["op"])
    except (KeyError, IndexError, ValueError, TypeError) as e:
        err(where, f"patch {op.get('op')} {op.get('path')}: path does not exist ({e})")


def render_kustomization(path: pathlib.Path) -> list[dict]:
    where = rel(path)
    k = load_all(path)[0]
    docs: list[dict] = []
    for r in k.get("resources", []):
        p = (path.parent / r).resolve()
        if p.is_dir():
            p = p / "kustomization.yaml"
            docs += render_kustomization(p) if p.exists() else []
            continue
        if not p.exists():
            err(where, f"resource {r} does not exist")
            continue
        docs += copy.deepcopy(load_all(p))
    for img in k.get("images", []):
        for d in docs:
            for c in (((d.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers", []):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag or 'latest')}"
    for patch in k.get("patches", []):
        t = patch.get("target", {})
        ops = yaml.safe_load(patch["patch"]) if isinstance(patch.get("patch"), str) else None
        if not isinstance(ops, list):
            err(where, "only JSON 6902 patches (a list of operations) are supported here")
            continue
        hits = [d for d in docs if d.get("kind") == t.get("kind")
                and (d.get("metadata") or {}).get("name") == t.get("name")]
        if not hits:
            err(where, f"patch target {t} matches no resource")
        for d in hits:
            for op in ops:
                json_pointer_apply(d, op, f"{where} {t.get('kind')}/{t.get('name')}")
    return docs


# --- project rules ----------------------------------------------------------------------------

def env_value(container: dict, name: str):
    for e in container.get("env") or []:
        if e.get("name") == name:
            return e.get("value")
    return None


def prestop_secs(container: dict) -> int:
    pre = ((container.get("lifecycle") or {}).get("preStop") or {})
    if "sleep" in pre:
        return int(pre["sleep"].get("seconds", 0))
    cmd = (pre.get("exec") or {}).get("command") or []
    if len(cmd) >= 2 and cmd[0].endswith("sleep"):
        return int(float(cmd[-1]))
    return 0


def check_server_container(where: str, c: dict, grace: int | None, ready=("/health/ready", "/v2/health/ready"),
                           live=("/health/live", "/v2/health/live")) -> None:
    rp = ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
    lp = ((c.get("livenessProbe") or {}).get("httpGet") or {}).get("path")
    if rp not in ready:
        err(where, f"container {c.get('name')}: readinessProbe must GET one of {ready}, not {rp}")
    if lp not in live:
        err(where, f"container {c.get('name')}: livenessProbe must GET one of {live}, not {lp}")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                err(where, f"container {c.get('name')}: resources.{part}.{r} is not set")
    pre = prestop_secs(c)
    if pre <= 0:
        err(where, f"container {c.get('name')}: no preStop sleep (endpoints must update before SIGTERM)")
    drain = int(env_value(c, "DLSERVE_DRAIN_TIMEOUT_SECS") or DEFAULT_DRAIN_SECS)
    if grace is not None and grace <= pre + drain:
        err(where, f"terminationGracePeriodSeconds {grace} must exceed preStop {pre} s + drain {drain} s")


def check_rules(where: str, docs: list[dict]) -> None:
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        for c in pod["containers"]:
            check_server_container(f"{where} Deployment/{name}", c, grace)
        sc = pod.get("securityContext") or {}
        if not sc.get("runAsNonRoot"):
            err(f"{where} Deployment/{name}", "securityContext.runAsNonRoot must be true")
    for s in by_kind.get("Service", []):
        sel = s["spec"].get("selector") or {}
        ok = any(all(d["spec"]["template"]["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())
                 for d in deployments.values())
        if deployments and not ok:
            err(f"{where} Service/{s['metadata']['name']}", f"selector {sel} matches no Deployment's pods")
        ports = {p.get("name") for d in deployments.values()
                 for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for p in s["spec"].get("ports", []):
            if isinstance(p.get("targetPort"), str) and deployments and p["targetPort"] not in ports:
                err(f"{where} Service/{s['metadata']['name']}", f"targetPort {p['targetPort']} names no container port")
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        ref = h["spec"]["scaleTargetRef"]
        if ref.get("kind") == "Deployment" and deployments and ref.get("name") not in deployments:
            err(f"{where} HorizontalPodAutoscaler/{h['metadata']['name']}", f"scaleTargetRef {ref['name']} is not a Deployment here")
        if h["spec"].get("minReplicas", 1) > h["spec"]["maxReplicas"]:
            err(f"{where} HorizontalPodAutoscaler/{h['metadata']['name']}", "minReplicas > maxReplicas")
    runtimes = {r["metadata"]["name"]: r for r in by_kind.get("ServingRuntime", [])}
    for name, r in runtimes.items():
        w = f"{where} ServingRuntime/{name}"
        if "v2" not in (r["spec"].get("protocolVersions") or []):
            err(w, "protocolVersions must include v2")
        for c in r["spec"]["containers"]:
            check_server_container(w, c, None)
            if 8080 not in [p.get("containerPort") for p in c.get("ports", [])]:
                err(w, f"container {c['name']} must expose port 8080")
    for i in by_kind.get("InferenceService", []):
        w = f"{where} InferenceService/{i['metadata']['name']}"
        pred = i["spec"]["predictor"]
        m = pred.get("model") or {}
        if m.get("protocolVersion") != "v2":
            err(w, "predictor.model.protocolVersion must be v2")
        rt = runtimes.get(m.get("runtime"))
        if rt is None:
            err(w, f"runtime {m.get('runtime')} is not a ServingRuntime here")
        else:
            formats = [f["name"] for f in rt["spec"].get("supportedModelFormats", [])]
            if (m.get("modelFormat") or {}).get("name") not in formats:
                err(w, f"modelFormat {m.get('modelFormat')} is not one of the runtime's {formats}")
            grace = pred.get("terminationGracePeriodSeconds", 30)
            c = rt["spec"]["containers"][0]
            drain = int(env_value(c, "DLSERVE_DRAIN_TIMEOUT_SECS") or DEFAULT_DRAIN_SECS)
            if grace <= prestop_secs(c) + drain:
                err(w, f"terminationGracePeriodSeconds {grace} must exceed preStop + drain ({prestop_secs(c)} + {drain} s)")


def check_gpu(where: str, docs: list[dict]) -> None:
    for d in docs:
        if d.get("kind") == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                if "nvidia.com/gpu" not in (c.get("resources", {}).get("limits") or {}):
                    err(f"{where} Deployment/{d['metadata']['name']}", "GPU variant must set limits nvidia.com/gpu")
                if env_value(c, "DLSERVE_DEVICE") not in ("cuda", "auto", None):
                    err(f"{where} Deployment/{d['metadata']['name']}", "GPU variant must not force DLSERVE_DEVICE=cpu")


def check_compose(path: pathlib.Path) -> int:
    docs = load_all(path)
    if not docs:
        return 0
    compose = docs[0]
    schema = json.loads((DOCKER / "schemas/compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for e in sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path)):
        err(rel(path), describe(e))
    services = compose.get("services") or {}
    if "dlserve" not in services or "prometheus" not in services:
        err(rel(path), "needs services dlserve and prometheus")
        return 1
    for v in services["prometheus"].get("volumes", []):
        src = v.split(":")[0] if isinstance(v, str) else v.get("source")
        if src.startswith(".") and not (path.parent / src).exists():
            err(rel(path), f"prometheus volume {src} does not exist")
    prom = load_all(DOCKER / "prometheus.yml")[0]
    jobs = prom.get("scrape_configs") or []
    if not any(j.get("metrics_path", "/metrics") == "/metrics"
               and any("dlserve:8080" in t for sc in j.get("static_configs", []) for t in sc.get("targets", []))
               for j in jobs):
        err("docker/prometheus.yml", "no scrape job for dlserve:8080/metrics")
    rules = load_all(DOCKER / "prometheus-rules.yml")[0]
    exprs = " ".join(r.get("expr", "") for g in rules.get("groups", []) for r in g.get("rules", []))
    for metric in ("dlserve_batch_size_bucket", "dlserve_queue_wait_seconds_bucket", "dlserve_compute_seconds_bucket"):
        if metric not in exprs:
            err("docker/prometheus-rules.yml", f"no rule over {metric}")
    return 1


def main(argv: list[str]) -> int:
    k8s_dir = pathlib.Path(argv[0]).resolve() if argv else DOCKER / "k8s"
    compose = pathlib.Path(argv[1]).resolve() if len(argv) > 1 else DOCKER / "compose.yaml"
    n = 0
    files = sorted(p for p in k8s_dir.rglob("*.y*ml"))
    if not files:
        err(str(k8s_dir), "no manifests found")
    plain: list[dict] = []
    for f in files:
        if f.name == "kustomization.yaml":
            continue
        docs = load_all(f)
        for d in docs:
            if not isinstance(d, dict) or "apiVersion" not in d or "kind" not in d:
                err(rel(f), "document without apiVersion/kind")
                continue
            validate_schema(rel(f), d)
            n += 1
        plain += docs
    check_rules(rel(k8s_dir) + " (KServe)", [d for d in plain if str(d.get("apiVersion", "")).startswith("serving.kserve.io")])
    for f in files:
        if f.name != "kustomization.yaml":
            continue
        docs = render_kustomization(f)
        where = f"{rel(f)} (rendered)"
        for d in docs:
            validate_schema(where, d)
            n += 1
        check_rules(where, docs)
        if "gpu" in f.parent.name:
            check_gpu(where, docs)
    if compose.exists():
        n += check_compose(compose)
    for e in errors:
        print(f"ERROR {e}", file=sys.stderr)
    status = "FAILED" if errors else "ok"
    print(f"validate-manifests: {n} manifests checked against Kubernetes {kv.major_minor(K8S_VERSION)}, "
          f"KServe and Compose schemas: {len(errors)} errors, {status}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
