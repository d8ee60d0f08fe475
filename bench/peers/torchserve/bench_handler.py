"""TorchServe handlers for the dlserve benchmark: one class per model kind, on TorchServe's
BaseHandler (which loads the TorchScript file with torch.jit.load and runs inference under
torch.inference_mode()). TorchServe hands each call a batch of requests (its own dynamic
batching: batch_size / max_batch_delay from config.properties, set to match dlserve's config);
each handler stacks the batch into one forward and returns one response per request.

The per-model handler files (digits_cnn.py, ...) only pick the class; common.py (shared with the
FastAPI peer) and the model's config.toml/labels.txt travel in the .mar as extra files.
"""
import io
import json
import os

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

import common


def _body(req):
    v = req.get("data")
    if v is None:
        v = req.get("body")
    return v


def _json(v):
    if isinstance(v, (bytes, bytearray)):
        return json.loads(v.decode("utf-8"))
    return v


class _Base(BaseHandler):
    def initialize(self, context):
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
        super().initialize(context)
        model_dir = context.system_properties.get("model_dir")
        self.cfg, self.labels = common.load_config(model_dir)
        self.version = 1


class Classifier(_Base):
    """PNG body (image/png) or JSON {"images": [{"pixels": [[...]]}]}, like dlserve's /classify."""

    def preprocess(self, data):
        ccfg = self.cfg["classifier"]
        rows, self.counts = [], []
        for req in data:
            v = _body(req)
            if isinstance(v, (bytes, bytearray)) and not v[:1] == b"{":
                items = [common.classifier_from_png(bytes(v), ccfg)]
            else:
                items = [common.classifier_from_pixels(im["pixels"], ccfg) for im in _json(v)["images"]]
            rows.extend(items)
            self.counts.append(len(items))
        self.inverted = [inv for _, inv in rows]
        return torch.stack([r for r, _ in rows])

    def postprocess(self, logits):
        res = common.classifier_results(logits.cpu(), self.labels, self.inverted, 5)
        out, i = [], 0
        for n in self.counts:
            out.append({"model": "digits-cnn", "version": self.version, "results": res[i:i + n]})
            i += n
        return out


class Forecaster(_Base):
    """JSON {"series": [...], "horizon": H}; same-length windows share a forward."""

    def handle(self, data, context):
        fcfg = self.cfg["forecaster"]
        reqs = [_json(_body(r)) for r in data]
        windows = [common.forecaster_window(r["series"], fcfg) for r in reqs]
        outs = [None] * len(reqs)
        by_len = {}
        for i, (w, _) in enumerate(windows):
            by_len.setdefault(len(w), []).append(i)
        with torch.inference_mode():
            first = {}
            for idx in by_len.values():
                ys = common.forecaster_batch(self.model, [windows[i][0] for i in idx], fcfg)
                first.update(zip(idx, ys))
            sc = fcfg.get("scaling")
            for i, r in enumerate(reqs):
                h = int(r["horizon"])
                if not 1 <= h <= fcfg["max_horizon"]:
                    raise ValueError("horizon out of range")
                w, trunc = windows[i]
                point, passes, y = [], 1, first[i]
                while True:
                    point.extend(y[: h - len(point)])
                    w = (w + y)[-fcfg["max_context"]:]
                    if len(point) >= h:
                        break
                    y = common.forecaster_batch(self.model, [w], fcfg)[0]
                    passes += 1
                if sc:
                    point = [v * sc["std"][0] + sc["mean"][0] for v in point]
                outs[i] = {"model": "co2-lstm", "version": self.version, "forecast": point, "quantiles": [],
                           "context_used": len(windows[i][0]), "truncated": trunc, "forward_passes": passes}
        return outs


class Anomaly(_Base):
    """JSON {"rows": [[30 numbers], ...]}."""

    def preprocess(self, data):
        acfg = self.cfg["anomaly"]
        self.raw, self.counts = [], []
        xs = []
        for req in data:
            rows = _json(_body(req))["rows"]
            self.raw.extend(rows)
            xs.extend(common.anomaly_scale(r, acfg) for r in rows)
            self.counts.append(len(rows))
        self.xs = xs
        return torch.from_numpy(np.stack(xs))

    def postprocess(self, recon):
        acfg = self.cfg["anomaly"]
        recon = recon.cpu().numpy()
        res = [common.anomaly_result(x, r, raw, acfg, 3) for x, r, raw in zip(self.xs, recon, self.raw)]
        out, i = [], 0
        for n in self.counts:
            out.append({"model": "cancer-ae", "version": self.version, "threshold_source": "calibrated",
                        "results": res[i:i + n]})
            i += n
        return out


class Generator(_Base):
    """JSON {"n": 1, "seed": S, "label": "7"} -> PNG grid (TorchServe predictions are POST)."""

    def handle(self, data, context):
        gcfg = self.cfg["generator"]
        zs, ls, counts = [], [], []
        for req in data:
            r = _json(_body(req)) or {}
            z, lab = common.generator_inputs(int(r.get("n", 1)), int(r.get("seed", 0)), r.get("label"), gcfg)
            zs.append(z)
            ls.append(lab)
            counts.append(z.shape[0])
        with torch.inference_mode():
            images = self.model(torch.cat(zs).to(self.device), torch.cat(ls).to(self.device)).cpu()
        out, i = [], 0
        for k, n in enumerate(counts):
            out.append(common.generator_png(images[i:i + n]))
            context.set_response_content_type(k, "image/png")
            i += n
        return out
