"""elnino-gru: GRU forecaster of monthly Nino 1+2 sea surface temperature (statsmodels' bundled `elnino` dataset).

Mirrors training/co2_lstm.py (same contract, config section, split scheme, training recipe and golden file), with
a GRU instead of the LSTM. An LSTM of comparable size is trained on the same data for the card; only the GRU ships.

Writes models/elnino-gru/{1/model.pt,config.toml,README.md,metrics.json} and tests/data/golden/elnino-gru.json.
Run from the repository root: .venv/bin/python training/elnino_gru.py
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

NAME = "elnino-gru"
H = 12                # model_horizon
MIN_T, MAX_T = 24, 120
TEST_MONTHS = 60
VAL_MONTHS = 48       # last 48 months of the training part pick the epoch count
HIDDEN = 64
EPOCHS = 120
BATCH = 64
LR = 3e-3
GAIN = 1.0            # in-model gain on the window-relative values (the series is globally scaled to unit std)
QUANTILES = [0.1, 0.5, 0.9]


class ElNinoGRU(nn.Module):
    """Input [B, T, 1] (globally scaled), any T >= 1; output [B, H, 1, 3]: the 0.1, 0.5 and 0.9 quantiles
    of each of the next H steps (direct multi-step; the median is the point forecast).

    As co2-lstm: each window is expressed relative to its last observed value (times a fixed gain), the
    recurrent layer reads that level and its first difference, and the head's output is added back to the
    last value. `cell="lstm"` builds the LSTM of comparable size the card compares against (never shipped)."""

    def __init__(self, hidden: int = HIDDEN, horizon: int = H, gain: float = GAIN, cell: str = "gru") -> None:
        super().__init__()
        self.horizon = horizon
        self.gain = gain
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(input_size=2, hidden_size=hidden, num_layers=1, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, horizon * 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x[:, -1:, :]                                  # [B, 1, 1]
        rel = (x - last) * self.gain                         # [B, T, 1]
        diff = torch.cat([torch.zeros_like(rel[:, :1]), rel[:, 1:] - rel[:, :-1]], dim=1)
        out, _ = self.rnn(torch.cat([rel, diff], dim=2))
        y = self.head(out[:, -1]).view(-1, self.horizon, 3)  # [B, H, 3]
        med = y[:, :, 1]
        lo = med - F.softplus(y[:, :, 0])                    # quantiles cannot cross
        hi = med + F.softplus(y[:, :, 2])
        q = torch.stack([lo, med, hi], dim=2) / self.gain    # [B, H, 3]
        return last.unsqueeze(3) + q.unsqueeze(2)            # [B, H, 1, 3]

    @torch.jit.export
    def setup(self) -> bool:
        """Named by config.toml's setup_method: dlserve calls it once per replica after loading it on its
        device. On CUDA it packs the GRU's weights into the one buffer cuDNN reads (what nn.GRU's
        flatten_parameters does in Python, which TorchScript cannot compile); a module loaded from a file has
        them as separate tensors, and cuDNN would then copy them into a buffer and log a warning on every
        forward. Returns whether it packed them (nothing to do on CPU). Same as co2-lstm's, with mode 3 (GRU):
        cuDNN's GRU layout is 3 gate matrices (r, z, n) per weight, which is PyTorch's layout too."""
        w = [self.rnn.weight_ih_l0, self.rnn.weight_hh_l0, self.rnn.bias_ih_l0, self.rnn.bias_hh_l0]
        if not w[0].is_cuda:
            return False
        # 4 tensors per layer; input size 2; mode 3 = GRU; no projection; 1 layer; batch first; one direction.
        # The op re-points the tensors in `w` at views of the buffer it returns; its schema does not say so,
        # and the buffer is used below so that the TorchScript compiler cannot drop the call as dead code.
        # The weights do not require grad (save_torchscript), and dlserve calls this under a no-grad guard.
        buf = torch._cudnn_rnn_flatten_weight(w, 4, 2, 3, self.rnn.hidden_size, 0, 1, True, False)
        return bool(buf.numel() > 0)


def export_spec():
    """(module class, example inputs, dynamic dims) for rebuilding the eager module and torch.export-ing it with
    weights from torch.jit.load(model.pt).state_dict(): input 0 is [B, T, 1] with B dynamic.

    Exported as it is, torch.export (torch 2.11) decomposes nn.GRU into a loop over time steps and specialises T
    ("Constraints violated (time)"). training/export_pt2.py exports the shipped package with T dynamic (24..120)
    through pt2.last_step_rnns, which runs the GRU as one scan over T with the same parameters; see training/pt2.py."""
    return ElNinoGRU, (torch.zeros(2, MAX_T, 1),), {"batch": [(0, 0)]}


def load_series() -> pd.Series:
    from statsmodels.datasets import elnino
    d = elnino.load_pandas().data                            # YEAR, JAN..DEC
    months = d.columns[1:]
    assert len(months) == 12
    y = d[months].to_numpy(dtype=np.float64).ravel()
    start = pd.Timestamp(year=int(d["YEAR"].iloc[0]), month=1, day=1)
    s = pd.Series(y, index=pd.date_range(start, periods=len(y), freq="MS"), name="sst_c")
    assert not s.isna().any() and np.all(np.diff(d["YEAR"].to_numpy()) == 1)
    return s


def windows(y: np.ndarray, origins: list[int], T: int) -> tuple[np.ndarray, np.ndarray]:
    """Context y[o-T:o] and target y[o:o+H] for each origin o (o = index of the first forecast step)."""
    X = np.stack([y[o - T:o] for o in origins])
    Y = np.stack([y[o:o + H] for o in origins])
    return X, Y


def pinball(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of quantile forecasts pred [B, H, Q] for targets y [B, H] (x2: the median term is L1)."""
    q = torch.tensor(QUANTILES).view(1, 1, -1)
    e = y.unsqueeze(2) - pred
    return 2 * torch.maximum(q * e, (q - 1) * e).mean()


def train(ys: np.ndarray, train_end: int, epochs: int, val, tag: str, cell: str = "gru", hidden: int = HIDDEN):
    """Trains on windows whose targets end at or before index train_end (exclusive)."""
    torch.manual_seed(C.SEED)
    rng = np.random.default_rng(C.SEED)
    model = ElNinoGRU(hidden=hidden, cell=cell)
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
            loss = pinball(pred, torch.from_numpy(Y).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot += loss.item() * len(origins)
            n += len(origins)
        sched.step()
        msg = f"train loss {tot / n:.4f}"
        if val is not None:
            vm = val(model)
            if vm < best[0]:
                best = (vm, copy.deepcopy(model.state_dict()), ep)
            msg += f" | val MASE {vm:.4f} (best {best[0]:.4f} @ {best[2]})"
        if ep % 10 == 0 or ep == 1 or ep == epochs:
            prog.step(ep, msg)
    return model, best, prog.elapsed()


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
                  "mae_c": float(err.mean()), "by_h": (err.mean(0) / scale).tolist()}
    return res


def baselines(y: np.ndarray, origins: list[int], train_end: int) -> dict:
    naive = np.stack([np.repeat(y[o - 1], H) for o in origins])
    snaive = np.stack([y[o - 12:o - 12 + H] for o in origins])  # H <= 12
    clim = y[:train_end].reshape(-1, 12).mean(0)                # monthly means of the training part (starts in Jan)
    climatology = np.stack([clim[np.arange(o, o + H) % 12] for o in origins])
    return {"naive": naive, "seasonal_naive": snaive, "climatology": climatology}


def fit(ys, y, val_start, test_start, scale, std, mean, cell: str, hidden: int):
    """Selection run (validation origins pick the epoch count), then the final fit on the whole training part."""
    val_origins = list(range(val_start, test_start - H + 1))

    def val_fn(m):
        f = forecast(m, ys, val_origins) * std + mean
        truth = np.stack([y[o:o + H] for o in val_origins])
        return float(np.abs(f - truth).mean() / scale)

    _, best, t1 = train(ys, val_start, EPOCHS, val_fn, f"{cell}-select", cell, hidden)
    best_ep = max(best[2], 10)
    model, _, t2 = train(ys, test_start, best_ep, None, f"{cell}-final", cell, hidden)
    return model.eval(), best, best_ep, t1 + t2


def lstm_hidden_like(n: int) -> int:
    """Hidden size of the comparison LSTM whose parameter count is closest to n."""
    return min(range(16, 129), key=lambda h: abs(C.n_params(ElNinoGRU(hidden=h, cell="lstm")) - n))


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
    clim_tr = ytr.reshape(-1, 12).mean(0)
    amp = float(clim_tr.max() - clim_tr.min())
    mean, std = round(float(ytr.mean()), 3), round(float(ytr.std()), 3)
    ys = (y - mean) / std
    scale = float(np.mean(np.abs(ytr[12:] - ytr[:-12])))  # in-sample seasonal-naive MAE (training part)
    C.log(NAME, f"scaling mean {mean} std {std}; MASE scale (train seasonal-naive MAE) {scale:.4f} C")

    model, best, best_ep, t_gru = fit(ys, y, val_start, test_start, scale, std, mean, "gru", HIDDEN)
    path = C.save_torchscript(model, NAME)
    ts = torch.jit.load(str(path))
    ts.eval()
    lstm_h = lstm_hidden_like(C.n_params(model))
    lstm, lbest, lbest_ep, t_lstm = fit(ys, y, val_start, test_start, scale, std, mean, "lstm", lstm_h)

    origins = list(range(test_start, N - H + 1))
    fc = baselines(y, origins, test_start)
    qf = forecast(ts, ys, origins, quantiles=True) * std + mean
    fc["gru"] = qf[:, :, 1]
    fc["lstm"] = forecast(lstm, ys, origins) * std + mean
    res = mase_table(y, fc, origins, scale)
    truth = np.stack([y[o:o + H] for o in origins])
    coverage = float(((truth >= qf[:, :, 0]) & (truth <= qf[:, :, 2])).mean())
    below = [float((truth < qf[:, :, i]).mean()) for i in range(3)]
    C.log(NAME, f"TEST 80% interval (q0.1..q0.9) coverage {coverage:.3f}; share of truths below q0.1/q0.5/q0.9: "
                + "/".join(f"{b:.3f}" for b in below))
    for k, v in res.items():
        C.log(NAME, f"TEST {k:>15}: MASE {v['mase']:.4f} (h=12 only {v['mase_h12']:.4f}), MAE {v['mae_c']:.3f} C")
    ratio = res["gru"]["mase"] / res["seasonal_naive"]["mase"]
    with torch.no_grad():
        for T in (MIN_T, 37, MAX_T):
            assert ts(torch.zeros(2, T, 1)).shape == (2, H, 1, 3)
        assert ts.setup() is False

    # Golden: 3 test-period windows of length 48, scaled.
    g_orig = [test_start + 6, test_start + 18, test_start + 30]
    gx = torch.from_numpy(np.stack([ys[o - 48:o] for o in g_orig])).float().unsqueeze(2).contiguous()
    C.write_golden(NAME, [gx])
    C.write_config(NAME, "forecaster",
                   "Monthly Nino 1+2 sea surface temperature (deg C) forecaster, GRU, 12 months per forward",
                   C.batching(32),
                   {"features": 1, "min_context": MIN_T, "max_context": MAX_T, "model_horizon": H, "max_horizon": 48,
                    "one_step": False, "quantiles": QUANTILES, "feature_names": ["sst_c"]},
                   {"scaling": {"mean": [mean], "std": [std]}}, top={"setup_method": "setup"})
    total = time.time() - t_start
    n_gru, n_lstm = C.n_params(model), C.n_params(lstm)
    metrics = {"test": res, "ratio_gru_vs_seasonal_naive": ratio,
               "ratio_gru_vs_lstm": res["gru"]["mase"] / res["lstm"]["mase"],
               "ratio_gru_vs_climatology": res["gru"]["mase"] / res["climatology"]["mase"],
               "mase_scale_c": scale, "interval80_coverage": coverage, "share_below_quantiles": below,
               "cut": f"{cut:%Y-%m-%d}", "selected_epochs": best_ep, "val_mase_best": best[0],
               "train_seconds": t_gru, "total_seconds": total, "params": n_gru, "model_bytes": path.stat().st_size,
               "lstm": {"hidden": lstm_h, "params": n_lstm, "selected_epochs": lbest_ep, "val_mase_best": lbest[0],
                        "train_seconds": t_lstm}}
    C.write_metrics(NAME, metrics)
    byh = "\n".join(f"| {h + 1} | {res['naive']['by_h'][h]:.3f} | {res['seasonal_naive']['by_h'][h]:.3f} | "
                    f"{res['climatology']['by_h'][h]:.3f} | {res['lstm']['by_h'][h]:.3f} | {res['gru']['by_h'][h]:.3f} |"
                    for h in range(H))
    gl = res["gru"]["mase"] / res["lstm"]["mase"]
    C.write_card(NAME, f"""
# elnino-gru

Forecaster of the monthly sea surface temperature of the Nino 1+2 region of the eastern Pacific (deg C): a GRU that
predicts the next {H} months in one forward. The second forecaster next to `co2-lstm`, chosen because its structure is
different: a strong annual cycle ({amp:.1f} deg C between the mean March, the warmest month, and the mean September, the
coldest, over the training part) but no trend, and El Nino / La Nina events on top of it, irregular
anomalies of several degrees lasting months, which neither repeating last year (seasonal naive) nor the average year
(climatology) anticipates.

## Data
- Source: `statsmodels.datasets.elnino` (`statsmodels==0.14.4`): monthly mean sea surface temperature of the Pacific
  between 0-10 S and 90-80 W (Nino 1+2), {s.index[0]:%Y-%m} to {s.index[-1]:%Y-%m}, NOAA ERSST.V3B via the
  Climate Prediction Center. Licence: public domain (as stated by the dataset's `COPYRIGHT`).
- Preprocessing: the 61 x 12 table (YEAR, JAN..DEC) read row by row -> {N} months, none missing.
- Split (by time, no shuffling), exactly as co2-lstm:
  - **training part: {s.index[0]:%Y-%m} .. {s.index[test_start - 1]:%Y-%m} ({test_start} months)**; the model never sees anything later.
    Within it, epoch selection used windows with targets before {s.index[val_start]:%Y-%m-%d}, validated on
    origins {s.index[val_start]:%Y-%m} .. {s.index[test_start - H]:%Y-%m}; the final model was then retrained on the whole
    training part for the selected {best_ep} epochs.
  - **test part: {cut:%Y-%m-%d} .. {s.index[-1]:%Y-%m} (the last {TEST_MONTHS} months); exact cut: {cut:%Y-%m-%d}**.

## Architecture
co2-lstm's design with a GRU: each window is taken relative to its last value (gain {GAIN:g}); a GRU (1 layer, hidden
{HIDDEN}) reads that level and its first difference; an MLP head (Linear {HIDDEN}->{HIDDEN}, GELU, Linear {HIDDEN}->{H}x3)
outputs, for each of the {H} future months, the median offset and two softplus gaps giving the 0.1 and 0.9 quantiles
(so they cannot cross); all are added back to the last value.
**{n_gru:,} parameters**, TorchScript file {C.file_kb(path)}. Accepts any context length T (trained on T drawn
uniformly from [{MIN_T}, {MAX_T}] per batch).
The module's `setup()` method (config `setup_method = "setup"`) mirrors co2-lstm's: when the server loads it on CUDA it
packs the GRU weights into the one buffer cuDNN reads, with `torch._cudnn_rnn_flatten_weight` in mode 3 (GRU) over the
4 tensors of the layer, each with PyTorch's 3-gate layout (w_ih [3H, 2], w_hh [3H, H], b_ih [3H], b_hh [3H]), which
is what `nn.GRU.flatten_parameters()` does in Python; on CPU it does nothing and returns false. (The CUDA path was
not exercised when this card was written: no GPU was available to the training run.)

## Training
As co2-lstm: AdamW (lr {LR}, cosine decay, weight decay 1e-4), batch {BATCH}, pinball (quantile) loss over
q = 0.1/0.5/0.9 on scaled values, gradient clipping 1.0, up to {EPOCHS} epochs for selection (best validation epoch
{best[2]}, validation MASE {best[0]:.4f}), final fit {best_ep} epochs. Seed {C.SEED}; {C.env_line()}.
Training time {C.fmt_secs(t_gru)} (the LSTM comparison {C.fmt_secs(t_lstm)}; whole script {C.fmt_secs(total)}).

## Held-out results
Rolling origins over the test part: every month from {cut:%Y-%m} to {s.index[N - H]:%Y-%m} ({len(origins)} origins), each
forecast made from the (at most {MAX_T}) months before its origin and scored on the next {H} months.
MASE = mean absolute error / {scale:.4f} deg C, the in-sample mean absolute seasonal(12)-naive error on the training part.

| forecast | MASE (h = 1..{H}) | MASE at h = 12 only | MAE (deg C) |
|---|---|---|---|
| naive (last value) | {res['naive']['mase']:.4f} | {res['naive']['mase_h12']:.4f} | {res['naive']['mae_c']:.3f} |
| seasonal naive (value 12 months earlier) | {res['seasonal_naive']['mase']:.4f} | {res['seasonal_naive']['mase_h12']:.4f} | {res['seasonal_naive']['mae_c']:.3f} |
| climatology (training-part mean of the calendar month) | {res['climatology']['mase']:.4f} | {res['climatology']['mase_h12']:.4f} | {res['climatology']['mae_c']:.3f} |
| LSTM of comparable size (hidden {lstm_h}, {n_lstm:,} parameters; not shipped) | {res['lstm']['mase']:.4f} | {res['lstm']['mase_h12']:.4f} | {res['lstm']['mae_c']:.3f} |
| **elnino-gru** | **{res['gru']['mase']:.4f}** | **{res['gru']['mase_h12']:.4f}** | **{res['gru']['mae_c']:.3f}** |

elnino-gru's point forecast is its median (q = 0.5). Its 80% interval (q0.1 .. q0.9) covered **{coverage:.3f}** of the
test values (nominal 0.80); shares of test values below q0.1 / q0.5 / q0.9: {below[0]:.3f} / {below[1]:.3f} / {below[2]:.3f}.

GRU / seasonal-naive MASE ratio: **{ratio:.3f}**. Bar (co2-lstm's): <= 0.8 -> **{'met' if ratio <= 0.8 else 'NOT met'}**.
GRU / climatology: {res['gru']['mase'] / res['climatology']['mase']:.3f}.

GRU vs LSTM: same recipe, same data, same selection; the LSTM (hidden {lstm_h}, {n_lstm:,} parameters, selected
{lbest_ep} epochs, validation MASE {lbest[0]:.4f}) reached test MASE {res['lstm']['mase']:.4f}, the GRU ({n_gru:,}
parameters) {res['gru']['mase']:.4f}: GRU / LSTM = **{gl:.3f}** ({'GRU better' if gl < 1 else 'LSTM better' if gl > 1 else 'equal'}),
training time {C.fmt_secs(t_gru)} vs {C.fmt_secs(t_lstm)} (on CPU PyTorch runs the LSTM through oneDNN's fused kernel but
the GRU through its generic implementation, about 1.8x slower per step at this size on this machine; the times were
also measured on a machine shared with other builds).
With {len(origins)} overlapping origins over 5 years (a few ENSO episodes), differences of a few percent are within
the run-to-run spread of such small models.

MASE by horizon step:

| h | naive | seasonal naive | climatology | LSTM | elnino-gru |
|---|---|---|---|---|---|
{byh}

## Tensor contract
- Config scaling (`[forecaster.scaling]`): mean {mean}, std {std} (training part). The server sends
  `(deg C - {mean}) / {std}` and inverts the output the same way.
- Input: `float32 [B, T, 1]`, {MIN_T} <= T <= {MAX_T} (the server keeps the most recent {MAX_T} months).
- Output: `float32 [B, {H}, 1, 3]`, the next {H} months, last axis the quantiles `[0.1, 0.5, 0.9]` (`quantiles` in
  config.toml; the 0.5 quantile is the point forecast). Longer horizons (up to 48) are rolled out by the server by
  appending predictions.

## Reproduce
`make models` (or `.venv/bin/python training/elnino_gru.py` from the repository root).
""")
    C.assert_bar(NAME, ratio <= 0.8, f"GRU MASE {res['gru']['mase']:.4f} <= 0.8 x seasonal-naive "
                                     f"{res['seasonal_naive']['mase']:.4f} (ratio {ratio:.3f})")
    return metrics


if __name__ == "__main__":
    main()
