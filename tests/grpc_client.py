"""Runs standard gRPC clients, none written here, against a running dlserve on its REST port:
Triton's (tritonclient.grpc, raw tensors), KServe's (kserve.InferenceGRPCClient, typed tensors),
and grpcio's health and reflection clients, on every default model.

Each answer is compared with the REST answer to the same request (tritonclient.http) and with
the golden outputs the training pipeline wrote (tests/data/golden/<model>.json, computed by
PyTorch on the same model files).

Usage: python tests/grpc_client.py HOST:PORT triton|kserve   (exit status 0 when every check passes)

The two clients ship generated code for the same `inference` protobuf package, and protobuf's
default descriptor pool refuses a second registration, so each runs in its own process.
"""

import asyncio
import json
import os
import sys

import grpc
import numpy as np
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden")
MODELS = ["digits-cnn", "co2-lstm", "elnino-gru", "cancer-ae", "digits-cgan", "digits-denoiser", "digits-detector",
          "fortunes-lstm", "fortunes-gru"]
NP = {"float32": np.float32, "int64": np.int64}


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


def golden(name):
    with open(os.path.join(GOLDEN, name + ".json")) as f:
        g = json.load(f)
    arrays = [np.array(i["data"], dtype=NP[i["dtype"]]).reshape(i["shape"]) for i in g["inputs"]]
    expected = [np.array(o["data"], dtype=np.float32).reshape(o["shape"]) for o in g["outputs"]]
    return g, arrays, expected


def close(got, want, atol, what):
    check(got is not None and got.shape == want.shape, f"{what}: shape {want.shape}")
    err = float(np.max(np.abs(got.astype(np.float32) - want)))
    check(err <= atol, f"{what}: within {atol} (max err {err:.2e})")


def triton(url):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=url)
    rest = httpclient.InferenceServerClient(url=url)
    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    meta = client.get_server_metadata(as_json=True)
    check("model_configuration" in meta["extensions"], f"extensions {meta['extensions']}")
    index = client.get_model_repository_index(as_json=True)
    names = {m["name"] for m in index.get("models", [])}
    check(set(MODELS) <= names, f"repository index lists every default model without a token ({sorted(names)})")
    for name in MODELS:
        g, arrays, expected = golden(name)
        check(client.is_model_ready(name), f"{name} ready")
        md = client.get_model_metadata(name, as_json=True)
        check(md["platform"] in ("pytorch_torchscript", "pytorch_aoti"), f"{name} platform {md['platform']}")
        cfg = client.get_model_config(name, as_json=True)["config"]
        check(int(cfg["max_batch_size"]) >= 1, f"{name} config max_batch_size {cfg['max_batch_size']}")
        check([i["name"] for i in cfg["input"]] == [i["name"] for i in md["inputs"]], f"{name} config inputs")
        check(cfg["dynamic_batching"] is not None, f"{name} config dynamic_batching")
        inputs, rest_inputs = [], []
        for spec, arr in zip(md["inputs"], arrays):
            dtype = "INT64" if arr.dtype == np.int64 else "FP32"
            i = grpcclient.InferInput(spec["name"], list(arr.shape), dtype)
            i.set_data_from_numpy(arr)
            inputs.append(i)
            r = httpclient.InferInput(spec["name"], list(arr.shape), dtype)
            r.set_data_from_numpy(arr, binary_data=True)
            rest_inputs.append(r)
        outputs = [grpcclient.InferRequestedOutput(o["name"]) for o in md["outputs"]]
        res = client.infer(name, inputs, outputs=outputs, request_id=f"{name}-grpc", client_timeout=30)
        check(res.get_response().id == f"{name}-grpc", f"{name} id echoed")
        rest_res = rest.infer(name, rest_inputs)
        for spec, want in zip(md["outputs"], expected):
            got = res.as_numpy(spec["name"])
            close(got, want, g["atol"] * 10, f"{name} tritonclient.grpc {spec['name']} vs golden")
            close(got, rest_res.as_numpy(spec["name"]), 1e-5, f"{name} tritonclient.grpc {spec['name']} vs REST")
        stats = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
        check(int(stats["inference_count"]) >= 2 * arrays[0].shape[0], f"{name} statistics count both requests")
    # Errors surface through the client with their code and message.
    bad = grpcclient.InferInput("features", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    try:
        client.infer("cancer-ae", [bad])
        raise AssertionError("a wrong shape was accepted")
    except InferenceServerException as e:
        check(e.status() == "StatusCode.INVALID_ARGUMENT" and "dimension 1" in e.message(), f"wrong shape refused: {e}")
    try:
        client.infer("no-such-model", [bad])
        raise AssertionError("an unknown model was accepted")
    except InferenceServerException as e:
        check(e.status() == "StatusCode.NOT_FOUND", f"unknown model: {e}")
    try:
        client.load_model("cancer-ae")
        raise AssertionError("a load without the admin token was accepted")
    except InferenceServerException as e:
        check(e.status() == "StatusCode.NOT_FOUND" and "admin routes are disabled" in e.message(), f"load needs the token: {e}")


async def kserve_client(url):
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    client = InferenceGRPCClient(url=url, timeout=30)
    check(await client.is_server_ready(), "kserve: server ready")
    rest = httpclient.InferenceServerClient(url=url)
    for name in MODELS:
        g, arrays, expected = golden(name)
        check(await client.is_model_ready(name), f"kserve: {name} ready")
        md = rest.get_model_metadata(name)
        inputs = []
        for spec, arr in zip(md["inputs"], arrays):
            dtype = "INT64" if arr.dtype == np.int64 else "FP32"
            i = InferInput(spec["name"], list(arr.shape), dtype)
            # Typed values (InferTensorContents), the other half of the protocol's tensor formats.
            i.set_data_from_numpy(arr, binary_data=False)
            inputs.append(i)
        res = await client.infer(InferRequest(model_name=name, infer_inputs=inputs, request_id=f"{name}-kserve"))
        check(res.id == f"{name}-kserve", f"kserve: {name} id echoed")
        by_name = {o.name: o for o in res.outputs}
        for spec, want in zip(md["outputs"], expected):
            got = by_name[spec["name"]].as_numpy()
            close(got, want, g["atol"] * 10, f"kserve: {name} {spec['name']} (typed) vs golden")
    await client.close()


def health_and_reflection(url):
    with grpc.insecure_channel(url) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "inference.GRPCInferenceService"):
            r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            check(r.status == health_pb2.HealthCheckResponse.SERVING, f"health '{service}' SERVING")
        try:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
            raise AssertionError("an unknown service was reported")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND, "health of an unknown service is NOT_FOUND")
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        check(next(watch).status == health_pb2.HealthCheckResponse.SERVING, "health Watch sends the status")
        watch.cancel()
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        resp = next(refl.ServerReflectionInfo(iter([req]), timeout=10))
        services = {s.name for s in resp.list_services_response.service}
        check({"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services, f"reflection lists {sorted(services)}")
        req = reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService")
        resp = next(refl.ServerReflectionInfo(iter([req]), timeout=10))
        check(len(resp.file_descriptor_response.file_descriptor_proto) >= 1, "reflection serves the service's descriptor")


def main(url, which):
    if which == "triton":
        triton(url)
        health_and_reflection(url)
    else:
        asyncio.run(kserve_client(url))
    print(f"all gRPC client checks passed ({which})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
