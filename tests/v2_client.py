"""Runs the Triton HTTP client (tritonclient, an Open Inference Protocol client not written here)
against a running dlserve, on each default model, with JSON and with binary tensors.

Usage: python tests/v2_client.py HOST:PORT   (exit status 0 when every check passes)
The expected outputs are the golden files written by the training pipeline
(tests/data/golden/<model>.json), computed by PyTorch on the same TorchScript files.
"""

import json
import os
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden")
MODELS = ["digits-cnn", "co2-lstm", "cancer-ae", "digits-cgan"]
NP = {"float32": np.float32, "int64": np.int64}


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


def main(url: str) -> None:
    client = httpclient.InferenceServerClient(url=url)
    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    meta = client.get_server_metadata()
    check("binary_tensor_data" in meta["extensions"], "binary extension advertised")
    for name in MODELS:
        with open(os.path.join(GOLDEN, name + ".json")) as f:
            golden = json.load(f)
        check(client.is_model_ready(name), f"{name} ready")
        md = client.get_model_metadata(name)
        check(md["platform"] in ("pytorch_torchscript", "pytorch_aoti"), f"{name} platform {md['platform']}")
        arrays = [np.array(i["data"], dtype=NP[i["dtype"]]).reshape(i["shape"]) for i in golden["inputs"]]
        expected = [np.array(o["data"], dtype=np.float32).reshape(o["shape"]) for o in golden["outputs"]]
        for binary in (False, True):
            inputs = []
            for spec, arr in zip(md["inputs"], arrays):
                dtype = "INT64" if arr.dtype == np.int64 else "FP32"
                inp = httpclient.InferInput(spec["name"], list(arr.shape), dtype)
                inp.set_data_from_numpy(arr, binary_data=binary)
                inputs.append(inp)
            outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary) for o in md["outputs"]]
            res = client.infer(name, inputs, outputs=outputs, request_id=f"{name}-{binary}")
            check(res.get_response()["id"] == f"{name}-{binary}", f"{name} id echoed (binary={binary})")
            for spec, want in zip(md["outputs"], expected):
                got = res.as_numpy(spec["name"])
                check(got is not None and got.shape == want.shape, f"{name} output {spec['name']} shape {want.shape} (binary={binary})")
                err = float(np.max(np.abs(got - want)))
                check(err <= golden["atol"] * 10, f"{name} matches golden within {golden['atol'] * 10} (max err {err:.2e}, binary={binary})")
    # A bad request is a 4xx with the protocol's error shape, surfaced by the client.
    bad = httpclient.InferInput("features", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    try:
        client.infer("cancer-ae", [bad])
        raise AssertionError("a wrong shape was accepted")
    except InferenceServerException as e:
        check("dimension 1" in str(e), f"wrong shape refused: {e}")
    print("all V2 client checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
