"""FastAPI + uvicorn + PyTorch peer for `make bench`: the same TorchScript files as dlserve, one
endpoint per model, mirroring dlserve's routes and JSON.

Written the way such servers are commonly written:
  * the models are loaded once at start-up (lifespan), put in eval mode, and every forward runs
    under torch.inference_mode();
  * torch.set_num_threads(BENCH_THREADS, default 1: the benchmark gives each server one core)
    and torch.set_num_interop_threads(1);
  * one uvicorn worker (uvloop + httptools, i.e. `uvicorn[standard]`); the benchmark pins it to
    one core, so that is "one worker per core";
  * `async def` handlers that call the model inline (no thread-pool hop), one request = one
    forward, no dynamic batching (FastAPI has none).

Run:  BENCH_MODELS_DIR=models uvicorn --app-dir bench/peers fastapi_app:app --port 8000
"""
import os
import sys
from contextlib import asynccontextmanager
from typing import List, Optional

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
torch.set_num_threads(THREADS)
torch.set_num_interop_threads(1)
DEVICE = torch.device(os.environ.get("BENCH_DEVICE", "cpu"))
MODELS_DIR = os.environ.get("BENCH_MODELS_DIR", "models")

MODELS = {}  # name -> (module, cfg, labels, version)
BY_KIND = {}  # kind -> name


@asynccontextmanager
async def lifespan(app):
    for name in sorted(os.listdir(MODELS_DIR)):
        d = os.path.join(MODELS_DIR, name)
        if not os.path.exists(os.path.join(d, "config.toml")):
            continue
        cfg, labels = common.load_config(d)
        path, version = common.latest_model_file(d)
        module = torch.jit.load(path, map_location=DEVICE).eval()
        MODELS[name] = (module, cfg, labels, version)
        BY_KIND.setdefault(cfg["kind"], name)
    # one warm-up forward per model, as dlserve does
    with torch.inference_mode():
        for name, (module, cfg, _, _) in MODELS.items():
            kind = cfg["kind"]
            if kind == "classifier":
                module(torch.zeros(1, *cfg["classifier"]["input_shape"], device=DEVICE))
            elif kind == "forecaster":
                module(torch.zeros(1, cfg["forecaster"]["min_context"], cfg["forecaster"]["features"], device=DEVICE))
            elif kind == "anomaly":
                module(torch.zeros(1, cfg["anomaly"]["features"], device=DEVICE))
            elif kind == "generator":
                module(torch.zeros(1, cfg["generator"]["latent_dim"], device=DEVICE),
                       torch.zeros(1, dtype=torch.int64, device=DEVICE))
    yield


app = FastAPI(title="fastapi-peer", lifespan=lifespan)


def pick(kind, name=None):
    name = name or BY_KIND.get(kind)
    if name not in MODELS or MODELS[name][1]["kind"] != kind:
        raise HTTPException(404, f"no {kind} model {name!r}")
    return name, MODELS[name]


@app.get("/health/ready")
async def ready():
    return {"status": "ready", "models": sorted(MODELS)}


class ImageInput(BaseModel):
    pixels: Optional[List[List[float]]] = None


class ClassifyRequest(BaseModel):
    model: Optional[str] = None
    top_k: Optional[int] = None
    images: List[ImageInput]


@app.post("/classify")
async def classify(request: Request, model: Optional[str] = None, top_k: int = 5):
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    name, (module, cfg, labels, version) = pick("classifier", model)
    ccfg = cfg["classifier"]
    try:
        if ctype.startswith("image/"):
            rows = [common.classifier_from_png(await request.body(), ccfg)]
        elif ctype == "application/json":
            req = ClassifyRequest.model_validate_json(await request.body())
            top_k = req.top_k or top_k
            rows = [common.classifier_from_pixels(im.pixels, ccfg) for im in req.images]
        else:
            raise HTTPException(415, "send image/png or application/json")
    except (common.BadRequest, ValidationError) as e:
        raise HTTPException(422, str(e))
    x = torch.stack([r for r, _ in rows]).to(DEVICE)
    with torch.inference_mode():
        logits = module(x).cpu()
    results = common.classifier_results(logits, labels, [inv for _, inv in rows], top_k)
    return {"model": name, "version": version, "results": results}


class ForecastRequest(BaseModel):
    model: Optional[str] = None
    series: List[float]
    horizon: int


@app.post("/forecast")
async def forecast(req: ForecastRequest):
    name, (module, cfg, _, version) = pick("forecaster", req.model)
    try:
        with torch.inference_mode():
            out = common.forecaster_run(module, req.series, req.horizon, cfg["forecaster"])
    except common.BadRequest as e:
        raise HTTPException(422, str(e))
    return {"model": name, "version": version, **out}


class AnomalyRequest(BaseModel):
    model: Optional[str] = None
    rows: List[List[float]]
    threshold: Optional[float] = None
    top_features: int = 3


@app.post("/anomaly")
async def anomaly(req: AnomalyRequest):
    name, (module, cfg, _, version) = pick("anomaly", req.model)
    acfg = cfg["anomaly"]
    try:
        xs = [common.anomaly_scale(r, acfg) for r in req.rows]
    except common.BadRequest as e:
        raise HTTPException(422, str(e))
    with torch.inference_mode():
        recon = module(torch.from_numpy(np.stack(xs)).to(DEVICE)).cpu().numpy()
    results = [common.anomaly_result(x, r, raw, acfg, req.top_features) for x, r, raw in zip(xs, recon, req.rows)]
    return {"model": name, "version": version, "threshold_source": "calibrated", "results": results}


@app.get("/generate")
async def generate(n: int = 1, seed: int = 0, label: Optional[str] = None, format: str = "png",
                   model: Optional[str] = None):
    name, (module, cfg, labels, version) = pick("generator", model)
    try:
        z, lab = common.generator_inputs(n, seed, label, cfg["generator"])
    except (common.BadRequest, ValueError) as e:
        raise HTTPException(422, str(e))
    with torch.inference_mode():
        images = module(z.to(DEVICE), lab.to(DEVICE)).cpu()
    if format == "png":
        return Response(common.generator_png(images), media_type="image/png", headers={"x-seed": str(seed)})
    u8 = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    imgs = [{"label": int(l), "label_name": labels[int(l)] if labels else None, "pixels": u8[i, 0].tolist()}
            for i, l in enumerate(lab.tolist())]
    return JSONResponse({"model": name, "version": version, "seed": seed, "images": imgs})
