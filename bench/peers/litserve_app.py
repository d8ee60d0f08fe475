"""LitServe peer for `make bench`: one LitServer with one LitAPI per model, each on its own path, with
LitServe's dynamic batching on.

Written the way LitServe's documentation sets up such a server:
  * one LitAPI per model, `api_path` /classify, /forecast, /anomaly and /generate (LitServe 0.2 serves a
    list of LitAPIs from one server); each gets one inference worker process (`workers_per_device=1`,
    one device) that loads its TorchScript file in `setup`, and the server runs one uvicorn API process
    (`num_api_servers=1`) that hands requests to the workers through LitServe's queues (its default
    transport; `--fast-queue` switches to ZeroMQ, which made no difference here on one core);
  * `max_batch_size` and `batch_timeout` per LitAPI from BENCH_BATCHING, which scripts/bench fills from
    each model's config.toml exactly as it fills TorchServe's batchSize/maxBatchDelay (dlserve's
    max_queue_delay_ms rounded up to whole milliseconds, at least 1);
  * `torch.set_num_threads(BENCH_THREADS)` and one inter-op thread in every worker; forwards under
    torch.inference_mode(); pre- and post-processing from common.py (through batch_models.py);
  * the request bodies and JSON answers of the FastAPI peer. LitServe routes are POST only, so the
    generator takes `{"n", "seed", "label"}` as a JSON body (as the TorchServe peer does) where the
    FastAPI peer and dlserve take a GET query. /classify takes a raw image/png body or the JSON pixel
    arrays on the same path: its decode_request declares `Union[ClassifyRequest, bytes]` as a FastAPI
    body, so FastAPI hands a JSON body over parsed and any other body as bytes.

Run:  BENCH_MODELS_DIR=models python bench/peers/litserve_app.py --port 8000
"""
import argparse
import json
import os
import sys
from typing import Annotated, List, Optional, Union

import litserve as ls
from fastapi import Body, HTTPException
from pydantic import BaseModel
from starlette.responses import Response

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import batch_models  # noqa: E402
import common  # noqa: E402
from schemas import ClassifyRequest, ForecastRequest, AnomalyRequest, GenerateRequest  # noqa: E402

THREADS, MODELS_DIR, DEVICE = common.THREADS, common.MODELS_DIR, common.DEVICE_NAME


class _Api(ls.LitAPI):
    """One model; decode_request runs per request, predict once per batch (a list of prepared requests)."""

    kind = None

    def setup(self, device):
        batch_models.set_threads(THREADS)
        self.m = batch_models.Model(MODELS_DIR, batch_models.NAMES[self.kind], device)

    def prepare(self, request):
        raise NotImplementedError

    def run(self, items):
        raise NotImplementedError

    def decode_request(self, request):
        try:
            return self.prepare(request)
        except (common.BadRequest, ValueError) as e:
            raise HTTPException(422, str(e))

    def batch(self, inputs):
        return list(inputs)

    def predict(self, x):
        if self.max_batch_size > 1:
            return self.run(x)
        return self.run([x])[0]  # LitServe's unbatched loop hands over one request

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return output


class ClassifierApi(_Api):
    kind = "classifier"

    def decode_request(self, request: Annotated[Union[ClassifyRequest, bytes], Body()]):
        return super().decode_request(request)

    def prepare(self, request):
        if isinstance(request, (bytes, bytearray)):
            return self.m.classify_png(bytes(request)), 5
        return self.m.classify_pixels(request.images), request.top_k or 5

    def run(self, items):
        return self.m.classify_run(items)


class ForecasterApi(_Api):
    kind = "forecaster"

    def decode_request(self, request: ForecastRequest):
        return super().decode_request(request)

    def prepare(self, request):
        return self.m.forecast_prepare(request.series, request.horizon)

    def run(self, items):
        return self.m.forecast_run(items)


class AnomalyApi(_Api):
    kind = "anomaly"

    def decode_request(self, request: AnomalyRequest):
        return super().decode_request(request)

    def prepare(self, request):
        return self.m.anomaly_prepare(request.rows, request.top_features)

    def run(self, items):
        return self.m.anomaly_run(items)


class GeneratorApi(_Api):
    kind = "generator"

    def decode_request(self, request: GenerateRequest):
        return super().decode_request(request)

    def prepare(self, request):
        return self.m.generate_prepare(request.n, request.seed, request.label)

    def run(self, items):
        return self.m.generate_run(items)

    def encode_response(self, output) -> Response:
        return Response(content=output, media_type="image/png")


APIS = {"classifier": (ClassifierApi, "/classify"), "forecaster": (ForecasterApi, "/forecast"),
        "anomaly": (AnomalyApi, "/anomaly"), "generator": (GeneratorApi, "/generate")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--fast-queue", action="store_true", help="LitServe's ZeroMQ response transport (default off)")
    a = ap.parse_args()
    # model name -> [max_batch_size, batch_timeout in seconds]; without it, no batching
    batching = json.loads(os.environ.get("BENCH_BATCHING", "{}"))
    apis = []
    for kind, (cls, path) in APIS.items():
        size, timeout = batching.get(batch_models.NAMES[kind], [1, 0.0])
        apis.append(cls(max_batch_size=int(size), batch_timeout=float(timeout), api_path=path))
    accelerator = "cuda" if DEVICE.startswith("cuda") else "cpu"
    server = ls.LitServer(apis, accelerator=accelerator, devices=1, workers_per_device=1, fast_queue=a.fast_queue)
    server.run(host=a.host, port=a.port, num_api_servers=1, generate_client_file=False)


if __name__ == "__main__":
    main()
