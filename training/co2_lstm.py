"""co2-lstm: LSTM forecaster of monthly Mauna Loa CO2 (statsmodels' bundled `co2` dataset).

Writes models/co2-lstm/{1/model.pt,config.toml,README.md,metrics.json} and tests/data/golden/co2-lstm.json.
Run from the repository root: .venv/bin/python training/co2_lstm.py
"""
from __future__ import annotations

import os

# Before torch is imported: idle OpenMP threads sleep instead of spinning. On a 2-core machine shared with
# other work (a cargo build), spinning threads made training 5-10x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import copy
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

NAME = "co2-lstm"
H = 12                # model_horizon
MIN_T, MAX_T = 24, 120
TEST_MONTHS = 60
VAL_MONTHS = 48       # last 48 months of the training part pick the epoch count
HIDDEN = 64
EPOCHS = 120
BATCH = 64
LR = 3e-3
GAIN = 10.0           # in-model gain on the window-relative values
QUANTILES = [0.1, 0.5, 0.9]


class CO2LSTM(nn.Module):
    """Input [B, T, 1] (globally scaled), any T >= 1; output [B, H, 1, 3]: the 0.1, 0.5 and 0.9 quantiles
    of each of the next H steps (direct multi-step; the median is the point forecast).

    RevIN-style: each window is expressed relative to its last observed value (times a fixed gain),
    the LSTM reads that level and its first difference, and the head's output is added back to the
    last value, so an upward trend beyond the training range is no problem."""

    def __init__(self, hidden: int = HIDDEN, horizon: int = H, gain: float = GAIN) -> None:
        super().__init__()
        self.horizon = horizon
        self.gain = gain
        self.lstm = nn.LSTM(input_size=2, hidden_size=hidden, num_layers=1, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, horizon * 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x[:, -1:, :]                                  # [B, 1, 1]
        rel = (x - last) * self.gain                         # [B, T, 1]
        diff = torch.cat([torch.zeros_like(rel[:, :1]), rel[:, 1:] - rel[:, :-1]], dim=1)
        out, _ = self.lstm(torch.cat([rel, diff], dim=2))
        y = self.head(out[:, -1]).view(-1, self.horizon, 3)  # [B, H, 3]
        med = y[:, :, 1]
        lo = med - F.softplus(y[:, :, 0])                    # quantiles cannot cross
        hi = med + F.softplus(y[:, :, 2])
        q = torch.stack([lo, med, hi], dim=2) / self.gain    # [B, H, 3]
        return last.unsqueeze(3) + q.unsqueeze(2)            # [B, H, 1, 3]

    @torch.jit.export
    def setup(self) -> bool:
        """Named by config.toml's setup_method: dlserve calls it once per replica after loading it on its
        device. On CUDA it packs the LSTM's weights into the one buffer cuDNN reads (what nn.LSTM's
        flatten_parameters does in Python, which TorchScript cannot compile); a module loaded from a
        file has them as separate tensors, and cuDNN would then copy them into a buffer and log a
        warning on every forward. Returns whether it packed them (nothing to do on CPU)."""
        w = [self.lstm.weight_ih_l0, self.lstm.weight_hh_l0, self.lstm.bias_ih_l0, self.lstm.bias_hh_l0]
        if not w[0].is_cuda:
            return False
        # 4 tensors per layer; input size 2; mode 2 = LSTM; no projection; 1 layer; batch first; one direction.
        # The op re-points the tensors in `w` at views of the buffer it returns; its schema does not say so,
        # and the buffer is used below so that the TorchScript compiler cannot drop the call as dead code.
        # The weights do not require grad (save_torchscript), and dlserve calls this under a no-grad guard.
        buf = torch._cudnn_rnn_flatten_weight(w, 4, 2, 2, self.lstm.hidden_size, 0, 1, True, False)
        return bool(buf.numel() > 0)


def load_series() -> pd.Series:
    from statsmodels.datasets import co2
    weekly = co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate(method="linear")
    assert not monthly.isna().any()
    return monthly


def windows(y: np.ndarray, origins: list[int], T: int) -> tuple[np.ndarray, np.ndarray]:
    """Context y[o-T:o] and target y[o:o+H] for each origin o (o = index of the first forecast step)."""
    X = np.stack([y[o - T:o] for o in origins])
    Y = np.stack([y[o:o + H] for o in origins])
    return X, Y


def train(ys: np.ndarray, train_end: int, epochs: int, val: tuple | None, tag: str):
    """Trains on windows whose targets end at or before index train_end (exclusive)."""
    torch.manual_seed(C.SEED)
    rng = np.random.default_rng(C.SEED)
    model = CO2LSTM()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    all_origins = np.arange(MIN_T, train_end - H + 1)
    best = (np.inf, None, 0)
    prog = C.Progress(f"{NAME}:{tag}", epochs)
    for ep in range(1, epochs + 1):
        model.train()
        perm = rng.permutation(all_origins)
        tot, n = 0.0, 0
        for i in range(0, len(perm), BATCH):
            T = int(rng.integers(MIN_T, MAX_T + 1))
            origins = [int(o) for o in perm[i:i + BATCH] if o >= T]
            if len(origins) < 4:
                origins = [int(o) for o in rng.choice(all_origins[all_origins >= T], 8)]
            X, Y = windows(ys, origins, T)
            pred = model(torch.from_numpy(X).float().unsqueeze(2))[:, :, 0, :]   # [B, H, 3]
            loss = pinball(pred, torch.from_numpy(Y).float()) * GAIN
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot += loss.item() * len(origins)
            n += len(origins)
        sched.step()
        msg = f"train L1 {tot / n:.4f}"
        if val is not None:
            vm = val(model)
            if vm < best[0]:
                best = (vm, copy.deepcopy(model.state_dict()), ep)
            msg += f" | val MASE {vm:.4f} (best {best[0]:.4f} @ {best[2]})"
        if ep % 5 == 0 or ep == 1 or ep == epochs:
            prog.step(ep, msg)
    return model, best, prog.elapsed()


def pinball(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of quantile forecasts pred [B, H, Q] for targets y [B, H] (x2: the median term is L1)."""
    q = torch.tensor(QUANTILES).view(1, 1, -1)
    e = y.unsqueeze(2) - pred
    return 2 * torch.maximum(q * e, (q - 1) * e).mean()


@torch.no_grad()
def forecast(model, ys: np.ndarray, origins: list[int], quantiles: bool = False) -> np.ndarray:
    """Median forecasts [len(origins), H] (or all quantiles [len(origins), H, 3]) in scaled units, each from
    the most recent <= MAX_T values before its origin o."""
    model.eval()
    out = []
    for o in origins:
        T = min(MAX_T, o)
        x = torch.from_numpy(ys[o - T:o]).float().view(1, T, 1)
        q = model(x)[0, :, 0, :].numpy()
        out.append(q if quantiles else q[:, 1])
    return np.stack(out)


def mase_table(y: np.ndarray, fc: dict, origins: list[int], scale: float) -> dict:
    truth = np.stack([y[o:o + H] for o in origins])
    res = {}
    for k, f in fc.items():
        err = np.abs(f - truth)
        res[k] = {"mase": float(err.mean() / scale), "mase_h12": float(err[:, -1].mean() / scale),
                  "mae_ppm": float(err.mean()), "by_h": (err.mean(0) / scale).tolist()}
    return res


def baselines(y: np.ndarray, origins: list[int]) -> dict:
    naive = np.stack([np.repeat(y[o - 1], H) for o in origins])
    snaive = np.stack([y[o - 12:o - 12 + H] for o in origins])  # H <= 12
    return {"naive": naive, "seasonal_naive": snaive}


def main() -> dict:
    C.setup()
    t_start = time.time()
    s = load_series()
    y = s.to_numpy(dtype=np.float64)
    N = len(y)
    test_start = N - TEST_MONTHS
    val_start = test_start - VAL_MONTHS
    cut = s.index[test_start]
    C.log(NAME, f"monthly series {s.index[0]:%Y-%m} .. {s.index[-1]:%Y-%m} ({N} months); "
                f"train {s.index[0]:%Y-%m}..{s.index[test_start - 1]:%Y-%m}, test from {cut:%Y-%m} ({TEST_MONTHS} months)")
    ytr = y[:test_start]
    mean, std = float(ytr.mean()), float(ytr.std())
    mean, std = round(mean, 3), round(std, 3)
    ys = (y - mean) / std
    scale = float(np.mean(np.abs(ytr[12:] - ytr[:-12])))  # in-sample seasonal-naive MAE (training part)
    C.log(NAME, f"scaling mean {mean} std {std}; MASE scale (train seasonal-naive MAE) {scale:.4f} ppm")

    # Phase 1: train on windows with targets before val_start, choose the epoch on the validation origins.
    val_origins = list(range(val_start, test_start - H + 1))

    def val_fn(m):
        f = forecast(m, ys, val_origins) * std + mean
        truth = np.stack([y[o:o + H] for o in val_origins])
        return float(np.abs(f - truth).mean() / scale)

    _, best, t1 = train(ys, val_start, EPOCHS, val_fn, "select")
    best_ep = max(best[2], 10)
    # Phase 2: retrain on the whole training part (targets before the cut) for the chosen number of epochs.
    model, _, t2 = train(ys, test_start, best_ep, None, "final")
    model.eval()
    path = C.save_torchscript(model, NAME)
    ts = torch.jit.load(str(path))
    ts.eval()

    origins = list(range(test_start, N - H + 1))
    fc = baselines(y, origins)
    qf = forecast(ts, ys, origins, quantiles=True) * std + mean
    fc["lstm"] = qf[:, :, 1]
    res = mase_table(y, fc, origins, scale)
    truth = np.stack([y[o:o + H] for o in origins])
    coverage = float(((truth >= qf[:, :, 0]) & (truth <= qf[:, :, 2])).mean())
    below = [float((truth < qf[:, :, i]).mean()) for i in range(3)]
    C.log(NAME, f"TEST 80% interval (q0.1..q0.9) coverage {coverage:.3f}; share of truths below q0.1/q0.5/q0.9: "
                + "/".join(f"{b:.3f}" for b in below))
    for k, v in res.items():
        C.log(NAME, f"TEST {k:>15}: MASE {v['mase']:.4f} (h=12 only {v['mase_h12']:.4f}), MAE {v['mae_ppm']:.3f} ppm")
    ratio = res["lstm"]["mase"] / res["seasonal_naive"]["mase"]
    # check any T in [MIN_T, MAX_T] is accepted
    with torch.no_grad():
        for T in (MIN_T, 37, MAX_T):
            assert ts(torch.zeros(2, T, 1)).shape == (2, H, 1, 3)

    # Golden: 3 test-period windows of length 48, scaled.
    g_orig = [test_start + 6, test_start + 18, test_start + 30]
    gx = torch.from_numpy(np.stack([ys[o - 48:o] for o in g_orig])).float().unsqueeze(2).contiguous()
    C.write_golden(NAME, [gx])
    C.write_config(NAME, "forecaster",
                   "Monthly Mauna Loa CO2 (ppm) forecaster, LSTM, 12 months per forward",
                   C.batching(32),
                   {"features": 1, "min_context": MIN_T, "max_context": MAX_T, "model_horizon": H, "max_horizon": 48,
                    "one_step": False, "quantiles": QUANTILES, "feature_names": ["co2_ppm"]},
                   {"scaling": {"mean": [mean], "std": [std]}},
                   # the forecaster /forecast serves when a request names none (elnino-gru is the other)
                   top={"default_for_kind": True, "setup_method": "setup"})
    total = time.time() - t_start
    metrics = {"test": {k: {kk: vv for kk, vv in v.items()} for k, v in res.items()}, "ratio_lstm_vs_seasonal_naive": ratio,
               "mase_scale_ppm": scale, "interval80_coverage": coverage, "share_below_quantiles": below, "cut": f"{cut:%Y-%m-%d}", "selected_epochs": best_ep,
               "val_mase_best": best[0], "train_seconds": t1 + t2, "total_seconds": total,
               "params": C.n_params(model), "model_bytes": path.stat().st_size}
    C.write_metrics(NAME, metrics)
    byh = "\n".join(f"| {h + 1} | {res['naive']['by_h'][h]:.3f} | {res['seasonal_naive']['by_h'][h]:.3f} | {res['lstm']['by_h'][h]:.3f} |"
                    for h in range(H))
    C.write_card(NAME, f"""
# co2-lstm

Forecaster of monthly atmospheric CO2 at Mauna Loa (ppm): an LSTM that predicts the next {H} months in one forward.

## Data
- Source: `statsmodels.datasets.co2` (`statsmodels==0.14.4`): weekly CO2 mole fraction at Mauna Loa,
  {s.index[0]:%Y-%m} to {s.index[-1]:%Y-%m} (Keeling, C.D. and T.P. Whorf, Scripps Institution of
  Oceanography, via CDIAC). Licence: public domain (as stated by the dataset's `COPYRIGHT`).
- Preprocessing: weekly values resampled to monthly means (`resample("MS").mean()`), missing months
  linearly interpolated -> {N} months.
- Split (by time, no shuffling):
  - **training part: {s.index[0]:%Y-%m} .. {s.index[test_start - 1]:%Y-%m} ({test_start} months)**; the model never sees anything later.
    Within it, epoch selection used windows with targets before {s.index[val_start]:%Y-%m-%d}, validated on
    origins {s.index[val_start]:%Y-%m} .. {s.index[test_start - H]:%Y-%m}; the final model was then retrained on the whole
    training part for the selected {best_ep} epochs.
  - **test part: {cut:%Y-%m-%d} .. {s.index[-1]:%Y-%m} (the last {TEST_MONTHS} months); exact cut: {cut:%Y-%m-%d}**
    (everything from this month on is held out).

## Architecture
In-model normalisation (RevIN-style): each window is taken relative to its last value (times {GAIN}); an LSTM
(1 layer, hidden {HIDDEN}) reads that level and its first difference; an MLP head (Linear {HIDDEN}->{HIDDEN}, GELU,
Linear {HIDDEN}->{H}x3) outputs, for each of the {H} future months, the median offset and two softplus gaps
giving the 0.1 and 0.9 quantiles (so they cannot cross); all are added back to the last value.
**{C.n_params(model):,} parameters**, TorchScript file {C.file_kb(path)}. Accepts any context length T (trained on T drawn
uniformly from [{MIN_T}, {MAX_T}] per batch).
The module's `setup()` method (config `setup_method = "setup"`) packs the LSTM weights into the one buffer cuDNN
reads when the server loads it on CUDA; on CPU it does nothing.

## Training
AdamW (lr {LR}, cosine decay, weight decay 1e-4), batch {BATCH}, pinball (quantile) loss over q = 0.1/0.5/0.9 on
scaled values, gradient clipping 1.0,
up to {EPOCHS} epochs for selection (best validation epoch {best[2]}, validation MASE {best[0]:.4f}), final fit {best_ep} epochs.
Seed {C.SEED}; {C.env_line()}. Training time {C.fmt_secs(t1 + t2)} (whole script {C.fmt_secs(total)}).

## Held-out results
Rolling origins over the test part: every month from {cut:%Y-%m} to {s.index[N - H]:%Y-%m} ({len(origins)} origins), each
forecast made from the (at most {MAX_T}) months before its origin and scored on the next {H} months.
MASE = mean absolute error / {scale:.4f} ppm, the in-sample mean absolute seasonal(12)-naive error on the training part.

| forecast | MASE (h = 1..{H}) | MASE at h = 12 only | MAE (ppm) |
|---|---|---|---|
| naive (last value) | {res['naive']['mase']:.4f} | {res['naive']['mase_h12']:.4f} | {res['naive']['mae_ppm']:.3f} |
| seasonal naive (value 12 months earlier) | {res['seasonal_naive']['mase']:.4f} | {res['seasonal_naive']['mase_h12']:.4f} | {res['seasonal_naive']['mae_ppm']:.3f} |
| **co2-lstm** | **{res['lstm']['mase']:.4f}** | **{res['lstm']['mase_h12']:.4f}** | **{res['lstm']['mae_ppm']:.3f}** |

co2-lstm's point forecast is its median (q = 0.5). Its 80% interval (q0.1 .. q0.9) covered **{coverage:.3f}** of the
test values (nominal 0.80); shares of test values below q0.1 / q0.5 / q0.9: {below[0]:.3f} / {below[1]:.3f} / {below[2]:.3f}.

LSTM / seasonal-naive MASE ratio: **{ratio:.3f}**. Bar: <= 0.8 -> **{'met' if ratio <= 0.8 else 'NOT met'}**.

MASE by horizon step:

| h | naive | seasonal naive | co2-lstm |
|---|---|---|---|
{byh}

## Tensor contract
- Config scaling (`[forecaster.scaling]`): mean {mean}, std {std} (training part). The server sends
  `(ppm - {mean}) / {std}` and inverts the output the same way.
- Input: `float32 [B, T, 1]`, {MIN_T} <= T <= {MAX_T} (the server keeps the most recent {MAX_T} months).
- Output: `float32 [B, {H}, 1, 3]`, the next {H} months, last axis the quantiles `[0.1, 0.5, 0.9]` (`quantiles` in
  config.toml; the 0.5 quantile is the point forecast). Longer horizons (up to 48) are rolled out by the server by
  appending predictions.

## Reproduce
`make models` (or `.venv/bin/python training/co2_lstm.py` from the repository root).
""")
    C.assert_bar(NAME, ratio <= 0.8, f"LSTM MASE {res['lstm']['mase']:.4f} <= 0.8 x seasonal-naive {res['seasonal_naive']['mase']:.4f} (ratio {ratio:.3f})")
    return metrics


def reexport() -> None:
    """Re-saves the trained weights of models/co2-lstm/1/model.pt with this file's module code (new
    methods, same forward) without retraining, and checks the forward is unchanged on the golden input."""
    path = C.model_path(NAME)
    old = torch.jit.load(str(path), map_location="cpu").eval()
    model = CO2LSTM()
    model.load_state_dict(old.state_dict())
    C.save_torchscript(model, NAME)
    new = torch.jit.load(str(path), map_location="cpu").eval()
    x = torch.randn(5, 48, 1)
    with torch.no_grad():
        assert torch.equal(old(x), new(x)), "forward changed"
        assert new.setup() is False
    C.log(NAME, f"re-exported {path} ({path.stat().st_size} bytes); forward unchanged")


if __name__ == "__main__":
    import sys
    reexport() if sys.argv[1:] == ["--reexport"] else main()
