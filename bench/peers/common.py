"""Pre- and post-processing shared by the benchmark peers (FastAPI app and TorchServe handlers).

It mirrors what dlserve does for each model kind (src/kinds/*.rs), reading the same
models/<name>/config.toml, so that every server does the same work per request:
  classifier  PNG or pixel arrays -> gray [1,28,28] in [0,1] -> invert if the border is light
              -> resize if needed -> (x - mean) / std -> logits -> softmax -> top-5
  forecaster  series -> last max_context steps -> scaled -> [1,T,1] -> 12 steps per forward,
              rolled until the horizon is covered -> unscaled
  anomaly     rows -> scaled -> reconstruction -> mean squared error score + top-3 features
  generator   seed -> z ~ N(0,1) [n,64], labels -> [n,1,28,28] in [-1,1] -> uint8 -> PNG grid
"""
import io
import json
import math
import os
import tomllib

import numpy as np
import torch
from PIL import Image


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    labels = None
    name = (cfg.get("classifier") or cfg.get("generator") or {}).get("labels_file")
    if name and os.path.exists(os.path.join(model_dir, name)):
        with open(os.path.join(model_dir, name)) as f:
            labels = [line.strip() for line in f if line.strip()]
    return cfg, labels


def latest_model_file(model_dir):
    versions = sorted(int(d) for d in os.listdir(model_dir) if d.isdigit())
    return os.path.join(model_dir, str(versions[-1]), "model.pt"), versions[-1]


class BadRequest(ValueError):
    pass


# ---------------------------------------------------------------- classifier
def _to_row(gray, ccfg):
    """gray: float32 HxW in [0,1] -> normalised [1,H,W] float tensor; returns (tensor, inverted)."""
    c, h, w = ccfg["input_shape"]
    border = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    inv = {"always": True, "never": False}.get(ccfg.get("invert", "auto"), float(border.mean()) > 0.5)
    if gray.shape != (h, w):
        gray = np.asarray(Image.fromarray(gray, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)
    gray = np.clip(gray, 0.0, 1.0)
    if inv:
        gray = 1.0 - gray
    x = (gray - ccfg["mean"][0]) / ccfg["std"][0]
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(0), inv


def classifier_from_png(data, ccfg):
    try:
        img = Image.open(io.BytesIO(data))
        img = img.convert("L")
    except Exception as e:  # noqa: BLE001
        raise BadRequest(f"undecodable image: {e}")
    gray = np.asarray(img, dtype=np.float32) / float(ccfg.get("pixel_scale", 255.0))
    return _to_row(gray, ccfg)


def classifier_from_pixels(pixels, ccfg):
    arr = np.asarray(pixels, dtype=np.float32)
    if arr.ndim != 2:
        raise BadRequest("pixels must be [H][W]")
    scale = float(ccfg.get("pixel_scale", 255.0))
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > scale:
        raise BadRequest(f"pixels must be finite numbers between 0 and {scale}")
    return _to_row(arr / scale, ccfg)


def classifier_results(logits, labels, inverted, k=5):
    probs = torch.softmax(logits.float(), dim=1)
    top = torch.topk(probs, min(k, probs.shape[1]), dim=1)
    out = []
    for i in range(probs.shape[0]):
        cls = [
            {"label": labels[j] if labels else str(j), "index": int(j), "probability": float(p)}
            for p, j in zip(top.values[i].tolist(), top.indices[i].tolist())
        ]
        out.append({"label": cls[0]["label"], "probability": cls[0]["probability"], "top_k": cls, "inverted": inverted[i]})
    return out


# ---------------------------------------------------------------- forecaster
def forecaster_window(series, fcfg):
    vals = np.asarray(series, dtype=np.float32).reshape(-1)
    if len(vals) < fcfg["min_context"]:
        raise BadRequest(f"series needs at least {fcfg['min_context']} steps")
    if not np.isfinite(vals).all():
        raise BadRequest("series must be finite numbers")
    truncated = len(vals) > fcfg["max_context"]
    vals = vals[-fcfg["max_context"]:]
    sc = fcfg.get("scaling")
    if sc:
        vals = (vals - sc["mean"][0]) / sc["std"][0]
    return list(vals), truncated


def forecaster_run(module, series, horizon, fcfg):
    """Runs forwards of model_horizon steps until horizon is covered (as dlserve does)."""
    if not 1 <= horizon <= fcfg["max_horizon"]:
        raise BadRequest(f"horizon must be between 1 and {fcfg['max_horizon']}")
    window, truncated = forecaster_window(series, fcfg)
    context_used = len(window)
    point, passes = [], 0
    while len(point) < horizon:
        x = torch.tensor(window, dtype=torch.float32).view(1, -1, 1)
        y = module(x).reshape(-1).tolist()
        passes += 1
        take = y[: horizon - len(point)]
        point.extend(take)
        window = (window + y)[-fcfg["max_context"]:]
    sc = fcfg.get("scaling")
    if sc:
        point = [v * sc["std"][0] + sc["mean"][0] for v in point]
    return {"forecast": point, "quantiles": [], "context_used": context_used, "truncated": truncated,
            "forward_passes": passes}


def forecaster_batch(module, windows, fcfg):
    """One forward for several same-length scaled windows (TorchServe batching)."""
    x = torch.tensor(windows, dtype=torch.float32).unsqueeze(-1)
    return module(x).reshape(len(windows), -1).tolist()


# ---------------------------------------------------------------- anomaly
def anomaly_scale(row, acfg):
    if len(row) != acfg["features"]:
        raise BadRequest(f"rows must have {acfg['features']} values")
    x = np.asarray(row, dtype=np.float32)
    if not np.isfinite(x).all():
        raise BadRequest("rows must be finite numbers")
    sc = acfg.get("scaling")
    if sc:
        x = (x - np.asarray(sc["mean"], dtype=np.float32)) / np.asarray(sc["std"], dtype=np.float32)
    return x


def anomaly_result(x, recon, raw, acfg, top=3):
    errs = (x - recon) ** 2
    total = float(errs.sum())
    score = total / max(len(errs), 1)
    sc = acfg.get("scaling")
    names = acfg.get("feature_names") or []
    order = sorted(range(len(errs)), key=lambda i: (-errs[i], i))[:top]
    contrib = []
    for i in order:
        rec = float(recon[i]) * sc["std"][i] + sc["mean"][i] if sc else float(recon[i])
        contrib.append({"feature": names[i] if i < len(names) else str(i), "index": i, "value": float(raw[i]),
                        "reconstructed": rec, "share": float(errs[i]) / total if total > 0 else 0.0})
    thr = float(acfg["threshold"])
    return {"score": score, "threshold": thr, "is_anomaly": score > thr, "top_features": contrib}


# ---------------------------------------------------------------- generator
def generator_inputs(n, seed, label, gcfg):
    if not 1 <= n <= gcfg.get("max_n", 64):
        raise BadRequest("n out of range")
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, gcfg["latent_dim"], generator=g)
    if label is None or str(label).strip() == "":
        labels = torch.randint(0, gcfg["num_classes"], (n,), generator=g)
    else:
        parsed = [int(s) for s in str(label).split(",")]
        if any(l < 0 or l >= gcfg["num_classes"] for l in parsed):
            raise BadRequest("label out of range")
        labels = torch.tensor(parsed * n if len(parsed) == 1 else parsed, dtype=torch.int64)
    return z, labels


def generator_png(images):
    """images: float tensor [n,1,H,W] in [-1,1] -> PNG bytes of a grid (as dlserve's png_grid)."""
    u8 = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    n, c, h, w = u8.shape
    cols = math.ceil(math.sqrt(n))
    rows = -(-n // cols)
    gap = 2
    canvas = np.zeros((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), dtype=np.uint8)
    for k in range(n):
        r, col = divmod(k, cols)
        canvas[r * (h + gap): r * (h + gap) + h, col * (w + gap): col * (w + gap) + w] = u8[k, 0]
    buf = io.BytesIO()
    Image.fromarray(canvas, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))
