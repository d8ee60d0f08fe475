#!/usr/bin/env python3
"""Generates the JSON Schemas of KServe's ServingRuntime (serving.kserve.io/v1alpha1) and
InferenceService (serving.kserve.io/v1beta1) in docker/schemas/kserve/ from the KServe Python
SDK, whose model classes are generated from the same Go types as KServe's CRDs.

    pip download --no-deps kserve==0.21.0 && unzip kserve-0.21.0-*.whl -d /tmp/kserve-sdk
    python3 docker/schemas/gen-kserve-schemas.py /tmp/kserve-sdk/kserve/models

The SDK is parsed, not imported (it pulls in a large web stack). Each class's `openapi_types` and
`attribute_map` give the fields and their types; a setter that raises "must not be `None`" marks a
required field. KServe objects get `additionalProperties: false` (kubectl's strict field
validation rejects unknown fields the same way). Kubernetes types (V1Container, V1Probe, ...) are
references into the Kubernetes definitions that kubernetes-validate ships
(https://kubernetes.io/api/_definitions.json), which scripts/validate-manifests registers.
Only needed when moving to another KServe version; the output is committed.
"""
import ast
import json
import pathlib
import re
import sys

K8S = "https://kubernetes.io/api/_definitions.json#/$defs/"
# Kubernetes client type names -> definition names. Everything "V1Xxx" is core/v1 unless listed.
K8S_NAMES = {
    "V1ObjectMeta": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    "V1ListMeta": "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
    "V1Time": "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
    "ResourceQuantity": "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "V1beta1MetricQuantity": "io.k8s.apimachinery.pkg.api.resource.Quantity",  # not defined in the SDK
    "K8sIoApiAppsV1DeploymentStrategy": "io.k8s.api.apps.v1.DeploymentStrategy",
    "K8sIoApiAutoscalingV2HorizontalPodAutoscalerBehavior": "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior",
}
# Types of other projects (Knative, KEDA) that appear in KServe objects: any object.
FOREIGN = ("Knative", "GithubCom", "NetUrl")
ROOTS = {
    "servingruntime-v1alpha1.json": ("V1alpha1ServingRuntime", "serving.kserve.io/v1alpha1", "ServingRuntime"),
    "inferenceservice-v1beta1.json": ("V1beta1InferenceService", "serving.kserve.io/v1beta1", "InferenceService"),
}


def parse_models(models_dir: pathlib.Path):
    classes = {}
    for f in sorted(models_dir.glob("*.py")):
        src = f.read_text()
        tree = ast.parse(src)
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            types = attrs = None
            for b in node.body:
                if isinstance(b, ast.Assign) and isinstance(b.targets[0], ast.Name):
                    if b.targets[0].id == "openapi_types":
                        types = ast.literal_eval(b.value)
                    elif b.targets[0].id == "attribute_map":
                        attrs = ast.literal_eval(b.value)
            if types is None:
                continue
            required = set(re.findall(r"Invalid value for `(\w+)`, must not be `None`", src))
            docs = {}
            for b in node.body:
                if isinstance(b, ast.FunctionDef) and b.name in types and ast.get_docstring(b):
                    lines = [ln.replace("# noqa: E501", "").strip() for ln in ast.get_docstring(b).splitlines()[1:]]
                    text = next((ln for ln in lines if ln and not ln.startswith(":")), "")
                    if text:
                        docs[b.name] = text
            classes[node.name] = (types, attrs, required, docs)
    return classes


def type_schema(t: str, used: set):
    t = t.strip()
    m = re.fullmatch(r"list\[(.*)\]", t)
    if m:
        return {"type": ["array", "null"], "items": type_schema(m.group(1), used)}
    m = re.fullmatch(r"dict\(str, (.*)\)", t)
    if m:
        return {"type": ["object", "null"], "additionalProperties": type_schema(m.group(1), used)}
    prim = {"str": {"type": ["string", "null"]}, "int": {"type": ["integer", "null"]},
            "bool": {"type": ["boolean", "null"]}, "float": {"type": ["number", "null"]},
            "datetime": {"type": ["string", "null"]}, "object": {}}
    if t in prim:
        return prim[t]
    if t in K8S_NAMES:
        return {"$ref": K8S + K8S_NAMES[t]}
    if t.startswith(("V1alpha", "V1beta")):
        used.add(t)
        return {"$ref": f"#/$defs/{t}"}
    if t.startswith(FOREIGN):
        return {"type": ["object", "null"]}
    if t in K8S_NAMES:
        return {"$ref": K8S + K8S_NAMES[t]}
    if re.fullmatch(r"V1[A-Z]\w+", t):
        return {"$ref": K8S + "io.k8s.api.core.v1." + t[2:]}
    raise SystemExit(f"unknown type {t}")


def build(classes, root, api_version, kind):
    defs, todo, done = {}, {root}, set()
    while todo:
        name = todo.pop()
        done.add(name)
        # The SDK names a few v1alpha1 types it only defines as v1beta1 (e.g. WorkerSpec).
        alias = re.sub(r"^V1alpha1", "V1beta1", name)
        types, attrs, required, docs = classes[name] if name in classes else classes[alias]
        used = set()
        props = {}
        for py, t in types.items():
            s = type_schema(t, used)
            if py in docs and "$ref" not in s:
                s = {"description": docs[py], **s}
            props[attrs[py]] = s
        d = {"type": "object", "properties": props, "additionalProperties": False}
        req = sorted(attrs[r] for r in required if r in attrs)
        if req:
            d["required"] = req
        defs[name] = d
        todo |= used - done
    top = dict(defs.pop(root))
    top["properties"]["apiVersion"] = {"type": "string", "enum": [api_version]}
    top["properties"]["kind"] = {"type": "string", "enum": [kind]}
    top["required"] = sorted(set(top.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://dlserve.invalid/schemas/kserve/{kind.lower()}.json",
        "title": f"KServe {kind} ({api_version}), generated from the KServe Python SDK by gen-kserve-schemas.py",
        **top,
        "$defs": dict(sorted(defs.items())),
    }


def main():
    models = pathlib.Path(sys.argv[1])
    out = pathlib.Path(__file__).resolve().parent / "kserve"
    out.mkdir(exist_ok=True)
    classes = parse_models(models)
    for fname, (root, api, kind) in ROOTS.items():
        schema = build(classes, root, api, kind)
        (out / fname).write_text(json.dumps(schema, indent=1, sort_keys=False) + "\n")
        print(f"{out / fname}: {len(schema['$defs'])} KServe definitions")


if __name__ == "__main__":
    main()
