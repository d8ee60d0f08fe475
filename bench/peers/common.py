"""Pre- and post-processing shared by the benchmark peers (the FastAPI app, the TorchServe handlers,
the LitServe and Ray Serve apps through batch_models.py).

It mirrors what dlserve does for each model kind (src/kinds/*.rs), reading the same
models/<name>/config.toml, so that every server does the same work per request:
  classifier  PNG or pixel arrays -> gray [1,28,28] in [0,1] -> invert if the border is light
              -> resize if needed -> (x - mean) / std -> logits -> softmax -> top-5
  forecaster  series -> last max_context steps -> scaled -> [1,T,1] -> 12 steps per forward
              (x 3 quantile levels when the model has them; the point forecast is the 0.5 level),
              rolled until the horizon is covered -> unscaled
  anomaly     rows -> scaled -> reconstruction -> mean squared error score + top-3 features
  generator   seed -> z ~ N(0,1) [n,64], labels -> [n,1,28,28] in [-1,1] -> uint8 -> PNG grid
  detector    PNG -> gray in [0,1] -> invert if the border is light -> letterbox (triangle filter) ->
              (x - mean) / std -> candidates -> objectness x class prob -> torchvision batched_nms ->
              boxes back in upload pixels
  denoiser    PNG -> gray -> invert if light -> [1,28,28] in [0,1] -> forward (or `encode` for /embed)
              -> uint8 in the upload's polarity -> PNG
"""
import io
import json
import math
import os
import tomllib

import numpy as np
import torch
from PIL import Image

# What every peer reads from the harness: libtorch threads, the models directory and the device.
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
MODELS_DIR = os.environ.get("BENCH_MODELS_DIR", "models")
DEVICE_NAME = os.environ.get("BENCH_DEVICE", "cpu")


def set_threads(threads=THREADS):
    """libtorch intra-op threads for this process (or worker), one inter-op thread."""
    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process (it can be set once)
        pass


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    labels = None
    name = (cfg.get("classifier") or cfg.get("generator") or cfg.get("detector") or {}).get("labels_file")
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


def forecaster_split(y, fcfg):
    """One item's output (flat list, model scale) -> (point steps, steps per quantile level), as
    src/kinds/forecaster.rs split_output for one feature: a model with `quantiles` gives [H, Q], and
    its point forecast is the 0.5 level (the mean of the levels when there is no 0.5 level)."""
    h = 1 if fcfg.get("one_step") else fcfg["model_horizon"]
    levels = fcfg.get("quantiles") or []
    q = len(levels)
    if q == 0:
        return y[:h], []
    qs = [[y[s * q + j] for s in range(h)] for j in range(q)]
    mid = next((j for j, lv in enumerate(levels) if abs(lv - 0.5) < 1e-6), None)
    point = qs[mid] if mid is not None else [sum(y[s * q:(s + 1) * q]) / q for s in range(h)]
    return point, qs


def forecaster_forward(module, windows, fcfg):
    """One forward for several same-length scaled windows -> (point, quantiles) per window."""
    x = torch.tensor(windows, dtype=torch.float32).unsqueeze(-1)
    return [forecaster_split(y, fcfg) for y in module(x).reshape(len(windows), -1).tolist()]


def forecaster_batch(module, windows, fcfg):
    """One forward for several same-length scaled windows (TorchServe batching) -> the point
    forecast (model scale) per window."""
    return [p for p, _ in forecaster_forward(module, windows, fcfg)]


def _forecast_answer(point, quantiles, fcfg, context_used, truncated, passes):
    sc = fcfg.get("scaling")

    def unscale(vals):
        return [v * sc["std"][0] + sc["mean"][0] for v in vals] if sc else list(vals)

    levels = fcfg.get("quantiles") or []
    return {"forecast": unscale(point),
            "quantiles": [{"level": lv, "values": unscale(v)} for lv, v in zip(levels, quantiles)],
            "context_used": context_used, "truncated": truncated, "forward_passes": passes}


def _roll_out(module, window, horizon, fcfg, first=None):
    """Forwards of model_horizon steps until horizon is covered, each point forecast appended to
    the window (src/kinds/forecaster.rs Rollout); `first` is the first forward's output if done."""
    levels = fcfg.get("quantiles") or []
    point, quantiles, passes = [], [[] for _ in levels], 0
    while len(point) < horizon:
        p, qs = first if first is not None and passes == 0 else forecaster_forward(module, [window], fcfg)[0]
        passes += 1
        take = min(len(p), horizon - len(point))
        for j, qv in enumerate(qs):
            quantiles[j].extend(qv[:take])
        window = (window + p[:take])[-fcfg["max_context"]:]
        point.extend(p[:take])
    return point, quantiles, passes


def forecaster_run(module, series, horizon, fcfg):
    """Runs forwards of model_horizon steps until horizon is covered (as dlserve does)."""
    if not 1 <= horizon <= fcfg["max_horizon"]:
        raise BadRequest(f"horizon must be between 1 and {fcfg['max_horizon']}")
    window, truncated = forecaster_window(series, fcfg)
    point, quantiles, passes = _roll_out(module, window, horizon, fcfg)
    return _forecast_answer(point, quantiles, fcfg, len(window), truncated, passes)


def forecaster_prepare(series, horizon, fcfg):
    """Checks one request before it joins a batch: (scaled window, truncated, horizon)."""
    horizon = int(horizon)
    if not 1 <= horizon <= fcfg["max_horizon"]:
        raise BadRequest(f"horizon must be between 1 and {fcfg['max_horizon']}")
    window, truncated = forecaster_window(series, fcfg)
    return window, truncated, horizon


def forecaster_run_batch(module, items, fcfg):
    """Several prepared requests (forecaster_prepare) at once, as the TorchServe handler does: the
    first forward of same-length windows is one batch, any further roll-out forward runs alone.
    Returns forecaster_run's dict per item, in order."""
    first, by_len = {}, {}
    for i, (w, _, _) in enumerate(items):
        by_len.setdefault(len(w), []).append(i)
    for idx in by_len.values():
        first.update(zip(idx, forecaster_forward(module, [items[i][0] for i in idx], fcfg)))
    out = []
    for i, (w, truncated, h) in enumerate(items):
        point, quantiles, passes = _roll_out(module, w, h, fcfg, first[i])
        out.append(_forecast_answer(point, quantiles, fcfg, len(w), truncated, passes))
    return out


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


# ---------------------------------------------------------------- images as dlserve reads them
# The detector, denoiser and image-embedding peers (bench/peers/fastapi_app.py; scripts/bench-kinds)
# reproduce dlserve's image path exactly enough that their answers can be compared number for number:
# decoding (src/kinds/classifier.rs from_image_on), the image crate's triangle-filter resize
# (imageops::resize, FilterType::Triangle), the border-mean inversion rule and the letterbox.
def image_gray(data, background=1.0):
    """Encoded image bytes -> float32 [H, W] in [0, 1], one channel, as dlserve decodes for a
    one-channel model: 8-bit gray exactly (value / 255); alpha composited onto `background` with
    BT.601 luma; RGB with the image crate's Rec. 709 luma."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # noqa: BLE001
        raise BadRequest(f"undecodable image: {e}")
    if img.mode in ("L", "1"):
        return np.asarray(img.convert("L"), dtype=np.float32) / np.float32(255.0)
    if "A" in img.getbands() or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / np.float32(255.0)
        a = rgba[..., 3]
        over = [rgba[..., c] * a + np.float32(background) * (1 - a) for c in range(3)]
        return (np.float32(0.299) * over[0] + np.float32(0.587) * over[1] + np.float32(0.114) * over[2]).astype(np.float32)
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / np.float32(255.0)
    return (np.float32(0.2126) * rgb[..., 0] + np.float32(0.7152) * rgb[..., 1]
            + np.float32(0.0722) * rgb[..., 2]).astype(np.float32)


def _triangle_weights(n_in, n_out):
    """[n_out, n_in] weights of the image crate's triangle filter along one axis (sample.rs
    vertical_sample / horizontal_sample: support 1 widened by the downscale ratio, normalised)."""
    ratio = np.float32(n_in) / np.float32(n_out)
    sratio = max(ratio, np.float32(1.0))
    support = np.float32(1.0) * sratio
    w = np.zeros((n_out, n_in), dtype=np.float32)
    for o in range(n_out):
        centre = (np.float32(o) + np.float32(0.5)) * ratio
        left = min(max(math.floor(centre - support), 0), n_in - 1)
        right = min(max(math.ceil(centre + support), left + 1), n_in)
        centre = centre - np.float32(0.5)
        i = np.arange(left, right, dtype=np.float32)
        k = np.maximum(np.float32(0.0), np.float32(1.0) - np.abs((i - centre) / sratio)).astype(np.float32)
        w[o, left:right] = k / k.sum(dtype=np.float32)
    return w


_WEIGHTS = {}


def resize_triangle(gray, w, h):
    """float32 [H, W] -> [h, w] as image::imageops::resize(Triangle) on a Luma<f32> image: the
    vertical pass, then the horizontal one, clamped to [0, 1]; untouched when already that size."""
    H, W = gray.shape
    if (W, H) == (w, h):
        return gray
    for key in ((H, h), (W, w)):
        if key not in _WEIGHTS:
            _WEIGHTS[key] = _triangle_weights(*key)
    wy, wx = _WEIGHTS[(H, h)], _WEIGHTS[(W, w)]
    return np.clip(wy @ gray @ wx.T, 0.0, 1.0).astype(np.float32)


def should_invert(gray, policy):
    """dlserve's InvertPolicy: auto inverts when the one-pixel border's mean is above 0.5."""
    if policy == "always":
        return True
    if policy == "never":
        return False
    border = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    return float(border.mean(dtype=np.float64)) > 0.5


def _round_half_away(x):
    return math.floor(x + 0.5)


# ---------------------------------------------------------------- detector
def detector_prepare(gray, dcfg):
    """gray [H, W] in [0, 1] -> (normalised [1, CH, CW] tensor, placement, inverted), as
    src/kinds/detector.rs prepare: inversion from the upload's border, letterbox (or stretch) with
    the triangle filter, black padding, (v - mean) / std."""
    c, ch, cw = dcfg["input_shape"]
    if c != 1:
        raise BadRequest("the peer serves one-channel detectors only")
    h, w = gray.shape
    inv = should_invert(gray, dcfg.get("invert", "auto"))
    if dcfg.get("resize", "letterbox") == "stretch":
        place = {"scale_x": np.float32(cw) / np.float32(w), "scale_y": np.float32(ch) / np.float32(h),
                 "pad_x": 0, "pad_y": 0, "width": w, "height": h}
        nw, nh = cw, ch
    else:
        s = min(np.float32(cw) / np.float32(w), np.float32(ch) / np.float32(h))
        nw = min(max(_round_half_away(float(np.float32(w) * s)), 1), cw)
        nh = min(max(_round_half_away(float(np.float32(h) * s)), 1), ch)
        place = {"scale_x": s, "scale_y": s, "pad_x": (cw - nw) // 2, "pad_y": (ch - nh) // 2, "width": w, "height": h}
    v = np.clip(resize_triangle(gray, nw, nh), 0.0, 1.0)
    if inv:
        v = np.float32(1.0) - v
    m, sd = np.float32(dcfg["mean"][0]), np.float32(dcfg["std"][0])
    canvas = np.full((ch, cw), (np.float32(0.0) - m) / sd, dtype=np.float32)
    canvas[place["pad_y"]:place["pad_y"] + nh, place["pad_x"]:place["pad_x"] + nw] = (v - m) / sd
    return torch.from_numpy(canvas).unsqueeze(0), place, inv


def detector_postprocess(cands, labels, score_threshold, iou_threshold, max_detections, place):
    """cands: [N, 5 + K] -> detections, best first: score = objectness x best class probability,
    >= score_threshold, class-wise NMS (torchvision.ops.batched_nms, suppressing IoU > threshold),
    the best max_detections, boxes mapped back through the placement and clamped to the upload."""
    from torchvision.ops import batched_nms  # the bench venv has it; the TorchServe handlers never call this

    prob, cls = cands[:, 5:].max(dim=1)
    scores = cands[:, 4] * prob
    keep = scores >= torch.tensor(score_threshold, dtype=torch.float32)
    boxes, scores, cls = cands[keep, :4], scores[keep], cls[keep]
    order = batched_nms(boxes, scores, cls, float(iou_threshold))[:max_detections]
    w, h = float(place["width"]), float(place["height"])
    sx, sy = float(place["scale_x"]), float(place["scale_y"])
    px, py = float(place["pad_x"]), float(place["pad_y"])
    out = []
    for b, s, k in zip(boxes[order].tolist(), scores[order].tolist(), cls[order].tolist()):
        out.append({"label": labels[k] if labels and k < len(labels) else str(k), "index": int(k), "score": s,
                    "box": {"x_min": min(max((b[0] - px) / sx, 0.0), w), "y_min": min(max((b[1] - py) / sy, 0.0), h),
                            "x_max": min(max((b[2] - px) / sx, 0.0), w), "y_max": min(max((b[3] - py) / sy, 0.0), h)}})
    return out


# ---------------------------------------------------------------- denoiser (and image embeddings)
def denoiser_prepare(gray, dcfg):
    """gray [H, W] in [0, 1] -> ([1, H', W'] tensor in [0, 1] in the model's polarity, inverted),
    as src/kinds/denoiser.rs prepare (no mean/std)."""
    c, h, w = dcfg["input_shape"]
    if c != 1:
        raise BadRequest("the peer serves one-channel denoisers only")
    inv = should_invert(gray, dcfg.get("invert", "auto"))
    v = np.clip(resize_triangle(gray, w, h), 0.0, 1.0)
    if inv:
        v = np.float32(1.0) - v
    return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).unsqueeze(0), inv


def denoiser_pixels(out, inverted):
    """[1, H, W] output -> uint8 [H, W] in the upload's polarity (to_pixels: clamp, invert back, round)."""
    v = out[0].clamp(0.0, 1.0).numpy()
    if inverted:
        v = np.float32(1.0) - v
    return np.floor(v * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def png_gray(pixels):
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()
