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
    forward, no dynamic batching (FastAPI has none);
  * /detect's class-wise non-maximum suppression is torchvision's (torchvision.ops.batched_nms),
    as a Python detection service would use; /embed calls the TorchScript module's `encode` method.

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
from torchvision.ops import batched_nms  # noqa: F401 (imported at start-up: the first /detect does not pay for it)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from schemas import ClassifyRequest, ForecastRequest, AnomalyRequest  # noqa: E402

common.set_threads()
DEVICE = torch.device(common.DEVICE_NAME)
MODELS_DIR = common.MODELS_DIR

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
            elif kind in ("detector", "denoiser"):
                module(torch.zeros(1, *cfg[kind]["input_shape"], device=DEVICE))
            if "embedding" in cfg:
                x = (torch.zeros(1, cfg["anomaly"]["features"], device=DEVICE) if kind == "anomaly"
                     else torch.zeros(1, *cfg[kind]["input_shape"], device=DEVICE))
                getattr(module, cfg["embedding"]["method"])(x)
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


@app.post("/forecast")
async def forecast(req: ForecastRequest):
    name, (module, cfg, _, version) = pick("forecaster", req.model)
    try:
        with torch.inference_mode():
            out = common.forecaster_run(module, req.series, req.horizon, cfg["forecaster"])
    except common.BadRequest as e:
        raise HTTPException(422, str(e))
    return {"model": name, "version": version, **out}


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


def image_body_kind(request):
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not ctype.startswith("image/"):
        raise HTTPException(415, "send the image as the raw body (image/png, image/jpeg, ...)")
    return ctype


@app.post("/detect")
async def detect(request: Request, model: Optional[str] = None, score_threshold: Optional[float] = None,
                 iou_threshold: Optional[float] = None, max_detections: Optional[int] = None, format: str = "json"):
    image_body_kind(request)
    name, (module, cfg, labels, version) = pick("detector", model)
    dcfg = cfg["detector"]
    score = dcfg.get("score_threshold", 0.5) if score_threshold is None else score_threshold
    iou = dcfg.get("iou_threshold", 0.5) if iou_threshold is None else iou_threshold
    cap = dcfg.get("max_detections", 100) if max_detections is None else max_detections
    if format != "json":
        raise HTTPException(422, "the peer answers format=json only")
    if not (0.0 <= score <= 1.0 and 0.0 <= iou <= 1.0 and 1 <= cap <= 1000):
        raise HTTPException(422, "score_threshold and iou_threshold in [0, 1], max_detections in [1, 1000]")
    try:
        gray = common.image_gray(await request.body(), dcfg.get("alpha_background", 1.0))
        x, place, inverted = common.detector_prepare(gray, dcfg)
    except common.BadRequest as e:
        raise HTTPException(400, str(e))
    with torch.inference_mode():
        cands = module(x.unsqueeze(0).to(DEVICE))[0].cpu()
        dets = common.detector_postprocess(cands, labels, score, iou, cap, place)
    return {"model": name, "version": version, "score_threshold": score, "iou_threshold": iou,
            "max_detections": cap, "results": [{"width": place["width"], "height": place["height"],
                                                "inverted": inverted, "detections": dets}]}


@app.post("/denoise")
async def denoise(request: Request, model: Optional[str] = None, format: str = "png"):
    image_body_kind(request)
    name, (module, cfg, _, version) = pick("denoiser", model)
    dcfg = cfg["denoiser"]
    if format not in ("png", "json"):
        raise HTTPException(422, "format must be png or json")
    try:
        gray = common.image_gray(await request.body(), dcfg.get("alpha_background", 1.0))
        x, inverted = common.denoiser_prepare(gray, dcfg)
    except common.BadRequest as e:
        raise HTTPException(400, str(e))
    with torch.inference_mode():
        out = module(x.unsqueeze(0).to(DEVICE))[0].cpu()
    pixels = common.denoiser_pixels(out, inverted)
    if format == "png":
        return Response(common.png_gray(pixels), media_type="image/png")
    _, h, w = dcfg["input_shape"]
    return {"model": name, "version": version, "width": w, "height": h,
            "results": [{"pixels": pixels.tolist(), "inverted": inverted}]}


class EmbedRowsRequest(BaseModel):
    model: Optional[str] = None
    rows: List[List[float]]


def pick_embedder(kind, name=None):
    """The named model, or the only one of `kind` with an [embedding] table (as dlserve picks)."""
    if name is None:
        names = [n for n, (_, c, _, _) in MODELS.items() if c["kind"] == kind and "embedding" in c]
        if len(names) != 1:
            raise HTTPException(400 if names else 404, f"{len(names)} models of kind {kind} embed; name one")
        name = names[0]
    if name not in MODELS or MODELS[name][1]["kind"] != kind or "embedding" not in MODELS[name][1]:
        raise HTTPException(400, f"model {name!r} does not embed {kind} inputs")
    module, cfg, _, version = MODELS[name]
    return name, version, cfg, getattr(module, cfg["embedding"]["method"])


@app.post("/embed")
async def embed(request: Request, model: Optional[str] = None):
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            req = EmbedRowsRequest.model_validate_json(await request.body())
        except ValidationError as e:
            raise HTTPException(422, str(e))
        name, version, cfg, encode = pick_embedder("anomaly", req.model or model)
        try:
            x = torch.from_numpy(np.stack([common.anomaly_scale(r, cfg["anomaly"]) for r in req.rows]))
        except (common.BadRequest, ValueError) as e:
            raise HTTPException(422, str(e))
    elif ctype.startswith("image/"):
        name, version, cfg, encode = pick_embedder("denoiser", model)
        dcfg = cfg["denoiser"]
        try:
            gray = common.image_gray(await request.body(), dcfg.get("alpha_background", 1.0))
            x = common.denoiser_prepare(gray, dcfg)[0].unsqueeze(0)
        except common.BadRequest as e:
            raise HTTPException(400, str(e))
    else:
        raise HTTPException(415, "send {\"rows\": [...]} as application/json, or an image as the raw body")
    with torch.inference_mode():
        z = encode(x.to(DEVICE)).cpu()
    return {"model": name, "version": version, "dim": cfg["embedding"]["dim"], "embeddings": z.tolist()}
