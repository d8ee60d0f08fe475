"""The four `make bench` models as batch functions, shared by the peers with dynamic batching of their
own (LitServe: bench/peers/litserve_app.py; Ray Serve: bench/peers/ray_app.py).

Each model kind is split the way those frameworks call user code: `prepare` checks and pre-processes one
request (raising common.BadRequest), `run` takes the prepared requests of one batch, does one forward for
all of them under torch.inference_mode() and returns one answer per request, with the JSON fields of the
FastAPI peer (bench/peers/fastapi_app.py) and dlserve. The pre- and post-processing is bench/peers/common.py.
"""
import os

import numpy as np
import torch

import common

NAMES = {"classifier": "digits-cnn", "forecaster": "co2-lstm", "anomaly": "cancer-ae", "generator": "digits-cgan"}


set_threads = common.set_threads


class Model:
    """One model of models/ (the newest version), loaded and warmed up with one forward, as dlserve does."""

    def __init__(self, models_dir, name, device="cpu"):
        d = os.path.join(models_dir, name)
        self.name = name
        self.cfg, self.labels = common.load_config(d)
        self.kind = self.cfg["kind"]
        path, self.version = common.latest_model_file(d)
        self.device = torch.device(device)
        self.module = torch.jit.load(path, map_location=self.device).eval()
        with torch.inference_mode():
            c = self.cfg
            if self.kind == "classifier":
                self.module(torch.zeros(1, *c["classifier"]["input_shape"], device=self.device))
            elif self.kind == "forecaster":
                f = c["forecaster"]
                self.module(torch.zeros(1, f["min_context"], f["features"], device=self.device))
            elif self.kind == "anomaly":
                self.module(torch.zeros(1, c["anomaly"]["features"], device=self.device))
            elif self.kind == "generator":
                self.module(torch.zeros(1, c["generator"]["latent_dim"], device=self.device),
                            torch.zeros(1, dtype=torch.int64, device=self.device))

    # ------------------------------------------------------------ classifier
    def classify_png(self, data):
        return [common.classifier_from_png(data, self.cfg["classifier"])]

    def classify_pixels(self, images):
        """images: the `images` list of the JSON body, each {"pixels": [[...]]}."""
        ccfg = self.cfg["classifier"]
        return [common.classifier_from_pixels(im["pixels"] if isinstance(im, dict) else im.pixels, ccfg)
                for im in images]

    def classify_run(self, items):
        """items: (list of (row, inverted), top_k) per request -> one JSON answer per request."""
        rows = [r for item, _ in items for r in item]
        x = torch.stack([r for r, _ in rows]).to(self.device)
        with torch.inference_mode():
            logits = self.module(x).cpu()
        out, i = [], 0
        for item, top_k in items:
            res = common.classifier_results(logits[i:i + len(item)], self.labels, [inv for _, inv in item], top_k)
            out.append({"model": self.name, "version": self.version, "results": res})
            i += len(item)
        return out

    # ------------------------------------------------------------ forecaster
    def forecast_prepare(self, series, horizon):
        return common.forecaster_prepare(series, horizon, self.cfg["forecaster"])

    def forecast_run(self, items):
        with torch.inference_mode():
            res = common.forecaster_run_batch(self.module, items, self.cfg["forecaster"])
        return [{"model": self.name, "version": self.version, **r} for r in res]

    # ------------------------------------------------------------ anomaly
    def anomaly_prepare(self, rows, top_features=3):
        acfg = self.cfg["anomaly"]
        return [common.anomaly_scale(r, acfg) for r in rows], [list(r) for r in rows], int(top_features)

    def anomaly_run(self, items):
        acfg = self.cfg["anomaly"]
        xs = [x for scaled, _, _ in items for x in scaled]
        with torch.inference_mode():
            recon = self.module(torch.from_numpy(np.stack(xs)).to(self.device)).cpu().numpy()
        out, i = [], 0
        for scaled, raw, top in items:
            res = [common.anomaly_result(x, r, v, acfg, top) for x, r, v in zip(scaled, recon[i:i + len(scaled)], raw)]
            out.append({"model": self.name, "version": self.version, "threshold_source": "calibrated", "results": res})
            i += len(scaled)
        return out

    # ------------------------------------------------------------ generator
    def generate_prepare(self, n, seed, label):
        try:
            return common.generator_inputs(int(n), int(seed), label, self.cfg["generator"])
        except ValueError as e:  # a label that is not a number
            raise common.BadRequest(str(e))

    def generate_run(self, items):
        """items: (z, labels) per request -> PNG bytes per request."""
        with torch.inference_mode():
            images = self.module(torch.cat([z for z, _ in items]).to(self.device),
                                 torch.cat([lab for _, lab in items]).to(self.device)).cpu()
        out, i = [], 0
        for z, _ in items:
            out.append(common.generator_png(images[i:i + z.shape[0]]))
            i += z.shape[0]
        return out
