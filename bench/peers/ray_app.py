"""Ray Serve peer for `make bench`: one Serve application per model, each one deployment with ONE replica
and `@serve.batch`, reached through Ray Serve's own HTTP proxy. This file is also its launcher.

Written the way Ray Serve's documentation sets up such a service:
  * the launcher starts a private local Ray instance (`ray.init(address="local")`) with `num_cpus` = the
    server cores it runs on (`--num-cpus`), no GPUs, no dashboard, its node address 127.0.0.1, its own
    temp dir (`--temp-dir`; sockets, logs), usage stats off (RAY_USAGE_STATS_ENABLED=0) and worker logs
    kept in the session's log files instead of echoed to this process; then `serve.start` with the HTTP
    proxy on 127.0.0.1:`--port` and `serve.run` of four applications, /classify, /forecast, /anomaly and
    /generate, one deployment each (`num_replicas=1`, a quarter of the CPUs reserved per replica so that
    all four fit on the CPUs given);
  * every replica: `torch.set_num_threads(BENCH_THREADS)` and one inter-op thread, its TorchScript file
    loaded once, an `async def __call__(starlette Request)` that parses and pre-processes the request
    and awaits a `@serve.batch` method doing one forward per batch under torch.inference_mode();
    max_batch_size and batch_wait_timeout_s from BENCH_BATCHING, which scripts/bench fills from each
    model's config.toml exactly as it fills TorchServe's batchSize/maxBatchDelay;
    `max_ongoing_requests` = 2 x max_batch_size (Ray's default of 5 would cap every batch at 5; Ray's
    batching guide says to raise it to at least max_batch_size);
  * the request bodies, paths, GET query of /generate and JSON answers of the FastAPI peer; pre- and
    post-processing from common.py (through batch_models.py).

Every Ray process (GCS, raylet, agents, workers, the Serve controller, proxy and replicas) descends from
this launcher and stays in its process group, so it inherits the launcher's CPU affinity (`taskset`), and
scripts/bench stops them all with the group. On SIGTERM the launcher shuts Serve and Ray down itself.

Run:  BENCH_MODELS_DIR=models python bench/peers/ray_app.py --port 8000 --num-cpus 1 --temp-dir /tmp/rb
"""
import argparse
import json
import logging
import os
import signal
import sys
import time
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# Before Ray is imported (its constants read these): no usage stats; the node's address is the loopback
# one (on Linux Ray otherwise picks the address of the default route's interface, also for a local
# instance: this switch, named for Windows and macOS, is the one that makes it use 127.0.0.1); no token
# authentication (it would write a token to ~/.ray).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from pydantic import BaseModel, ValidationError  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402

import batch_models  # noqa: E402
import common  # noqa: E402
from schemas import ClassifyRequest, ForecastRequest, AnomalyRequest  # noqa: E402

ROUTES = {"classifier": "/classify", "forecaster": "/forecast", "anomaly": "/anomaly", "generator": "/generate"}


@serve.deployment(num_replicas=1)
class ModelDeployment:
    """One model behind one route; requests are pre-processed on arrival and batched for the forward."""

    def __init__(self, models_dir, kind, threads, max_batch_size, batch_wait_timeout_s, device="cpu"):
        batch_models.set_threads(threads)
        self.kind = kind
        self.m = batch_models.Model(models_dir, batch_models.NAMES[kind], device)
        self.run = {"classifier": self.m.classify_run, "forecaster": self.m.forecast_run,
                    "anomaly": self.m.anomaly_run, "generator": self.m.generate_run}[kind]
        self.batched.set_max_batch_size(int(max_batch_size))
        self.batched.set_batch_wait_timeout_s(float(batch_wait_timeout_s))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.001)
    async def batched(self, items):
        return self.run(items)

    async def prepare(self, request):
        m, q = self.m, request.query_params
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if self.kind == "generator":
            if request.method != "GET":
                raise HTTPError(405, "Method Not Allowed")
            if q.get("format", "png") != "png":
                raise HTTPError(422, "the peer answers format=png only")
            return m.generate_prepare(int(q.get("n", 1)), int(q.get("seed", 0)), q.get("label"))
        if request.method != "POST":
            raise HTTPError(405, "Method Not Allowed")
        body = await request.body()
        if self.kind == "classifier":
            if ctype.startswith("image/"):
                return m.classify_png(body), int(q.get("top_k", 5))
            if ctype != "application/json":
                raise HTTPError(415, "send image/png or application/json")
            req = ClassifyRequest.model_validate_json(body)
            return m.classify_pixels(req.images), req.top_k or int(q.get("top_k", 5))
        if self.kind == "forecaster":
            req = ForecastRequest.model_validate_json(body)
            return m.forecast_prepare(req.series, req.horizon)
        req = AnomalyRequest.model_validate_json(body)
        return m.anomaly_prepare(req.rows, req.top_features)

    async def __call__(self, request: Request):
        try:
            item = await self.prepare(request)
        except HTTPError as e:
            return JSONResponse({"detail": e.detail}, status_code=e.status)
        except (common.BadRequest, ValidationError, ValueError) as e:
            return JSONResponse({"detail": str(e)}, status_code=422)
        out = await self.batched(item)
        if self.kind == "generator":
            return Response(out, media_type="image/png", headers={"x-seed": request.query_params.get("seed", "0")})
        return out


class HTTPError(Exception):
    def __init__(self, status, detail):
        super().__init__(detail)
        self.status, self.detail = status, detail


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--num-cpus", type=float, default=float(len(os.sched_getaffinity(0))))
    ap.add_argument("--temp-dir", default=None, help="Ray's temp dir (sockets, logs); absolute, short")
    a = ap.parse_args()
    # The replicas import this module, batch_models and common by name: Ray's workers inherit this path.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [HERE, os.environ.get("PYTHONPATH")] if p)
    import ray

    threads, models_dir, device = common.THREADS, os.path.abspath(common.MODELS_DIR), common.DEVICE_NAME
    batching = json.loads(os.environ.get("BENCH_BATCHING", "{}"))
    t0 = time.monotonic()
    ray.init(address="local", num_cpus=a.num_cpus, num_gpus=0, include_dashboard=False,
             _node_ip_address="127.0.0.1", _temp_dir=a.temp_dir, log_to_driver=False,
             logging_level=logging.WARNING)

    def stop(*_):
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serve.start(http_options={"host": a.host, "port": a.port})
    share = a.num_cpus / len(ROUTES)
    for kind, route in ROUTES.items():
        size, wait_s = batching.get(batch_models.NAMES[kind], [1, 0.0])
        dep = ModelDeployment.options(name=batch_models.NAMES[kind], num_replicas=1,
                                      max_ongoing_requests=max(5, 2 * int(size)),
                                      ray_actor_options={"num_cpus": share})
        serve.run(dep.bind(models_dir, kind, threads, int(size), float(wait_s), device), name=kind,
                  route_prefix=route)
    print(f"ray_app: {len(ROUTES)} applications running on http://{a.host}:{a.port} after "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    # Run as a script, this file is __main__; import it by name instead, so that the deployment and the
    # request models pickle as references to the module `ray_app` that every replica imports.
    import ray_app

    ray_app.main()
