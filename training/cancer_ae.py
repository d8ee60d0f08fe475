"""cancer-ae: autoencoder anomaly scorer on scikit-learn's breast-cancer data (benign = normal).

Writes models/cancer-ae/{1/model.pt,config.toml,README.md,metrics.json} and tests/data/golden/cancer-ae.json.
Run from the repository root: .venv/bin/python training/cancer_ae.py
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
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

NAME = "cancer-ae"
SPLIT_SEED = 11
STEPS = 1500          # full-batch AdamW steps
LR = 3e-3
PERCENTILE = 95.0
# Small grid chosen on the VALIDATION split (benign val + malignant val), never on test.
GRID = [(k, q, noise) for k in (6, 10) for q in (0.0, 0.02) for noise in (0.3, 0.7)]


class CancerAE(nn.Module):
    """Input [B, 30] standard-scaled rows; output their reconstruction [B, 30].

    The decoder's output is squashed into the per-feature range [lo, hi] of the benign training rows
    (lo/hi: the q and 1-q quantiles), so the reconstruction stays on the normal data: a row with values
    far outside the benign range cannot be reproduced and scores high."""

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, k: int = 10, hidden: int = 16) -> None:
        super().__init__()
        d = lo.numel()
        self.encoder = nn.Sequential(nn.Linear(d, hidden), nn.ELU(), nn.Linear(hidden, k))
        self.decoder = nn.Sequential(nn.Linear(k, hidden), nn.ELU(), nn.Linear(hidden, d))
        self.register_buffer("lo", lo.clone())
        self.register_buffer("hi", hi.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lo + (self.hi - self.lo) * torch.sigmoid(self.decoder(self.encoder(x)))


def fit(xtr: np.ndarray, k: int, q: float, noise: float, tag: str, verbose: bool) -> CancerAE:
    torch.manual_seed(C.SEED)
    g = torch.Generator().manual_seed(C.SEED)
    lo = torch.from_numpy(np.quantile(xtr, q, axis=0).astype(np.float32))
    hi = torch.from_numpy(np.quantile(xtr, 1 - q, axis=0).astype(np.float32))
    model = CancerAE(lo, hi, k)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-3)
    t = torch.from_numpy(xtr)
    prog = C.Progress(f"{NAME}:{tag}", STEPS, unit="step")
    model.train()
    for step in range(1, STEPS + 1):
        loss = F.mse_loss(model(t + noise * torch.randn(t.shape, generator=g)), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if verbose and (step % 300 == 0 or step == 1):
            prog.step(step, f"train denoising MSE {loss.item():.4f}")
    return model.eval()


def score(model, x: np.ndarray) -> np.ndarray:
    """The server's score: mean over features of (x_scaled - reconstruction)^2."""
    with torch.no_grad():
        t = torch.from_numpy(x).float()
        return ((t - model(t)) ** 2).mean(1).numpy()


def main() -> dict:
    C.setup()
    t_start = time.time()
    ds = load_breast_cancer()
    X, y = ds.data, ds.target            # target 0 = malignant, 1 = benign
    anomaly = (y == 0).astype(int)
    ben, mal = np.where(anomaly == 0)[0], np.where(anomaly == 1)[0]
    ben_rest, ben_test = train_test_split(ben, test_size=0.25, random_state=SPLIT_SEED)
    ben_train, ben_val = train_test_split(ben_rest, test_size=0.2, random_state=SPLIT_SEED)
    mal_val, mal_test = train_test_split(mal, test_size=0.7, random_state=SPLIT_SEED)
    test_idx = np.concatenate([np.sort(ben_test), np.sort(mal_test)])
    C.log(NAME, f"{len(X)} rows ({len(ben)} benign, {len(mal)} malignant); benign train/val/test = "
                f"{len(ben_train)}/{len(ben_val)}/{len(ben_test)}; malignant val/test = {len(mal_val)}/{len(mal_test)}")
    mean = X[ben_train].mean(0)
    std = X[ben_train].std(0)
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
    sc = lambda a: ((a - mean32) / std32).astype(np.float32)  # noqa: E731 (exactly what the server does in f32)
    xtr, xva, xte = sc(X[ben_train]), sc(X[ben_val]), sc(X[test_idx])
    xsel = sc(X[np.concatenate([ben_val, mal_val])])
    ysel = np.r_[np.zeros(len(ben_val), int), np.ones(len(mal_val), int)]
    yte = anomaly[test_idx]

    t0 = time.time()
    sel = []
    prog = C.Progress(f"{NAME}:select", len(GRID), unit="config")
    for i, (k, q, noise) in enumerate(GRID, 1):
        m = fit(xtr, k, q, noise, "select", False)
        sel.append((float(roc_auc_score(ysel, score(m, xsel))), k, q, noise))
        prog.step(i, f"bottleneck {k}, range quantile {q}, noise {noise}: validation AUC {sel[-1][0]:.4f}")
    val_auc, K, Q, NOISE = max(sel, key=lambda r: r[0])
    C.log(NAME, f"selected bottleneck {K}, range quantile {Q}, noise {NOISE} (validation AUC {val_auc:.4f})")
    model = fit(xtr, K, Q, NOISE, "final", True)
    train_secs = time.time() - t0
    path = C.save_torchscript(model, NAME)
    ts = torch.jit.load(str(path))
    ts.eval()

    val_scores = score(ts, xva)
    threshold = float(np.percentile(val_scores, PERCENTILE))
    s_te = score(ts, xte)
    auc = float(roc_auc_score(yte, s_te))
    pred = (s_te > threshold).astype(int)
    prec, rec = float(precision_score(yte, pred)), float(recall_score(yte, pred))
    fpr = float(pred[yte == 0].mean())

    # Baselines: distance to the benign mean (mean of squared scaled features) and PCA reconstruction.
    d_te = (xte ** 2).mean(1)
    BOTTLENECK = K
    pca = PCA(n_components=BOTTLENECK, random_state=0).fit(xtr)
    p_te = ((xte - pca.inverse_transform(pca.transform(xte))) ** 2).mean(1)
    base = {}
    for bname, s_tr_val, s_test in [("distance to benign mean", (xva ** 2).mean(1), d_te),
                                    (f"PCA ({BOTTLENECK} components) reconstruction",
                                     ((xva - pca.inverse_transform(pca.transform(xva))) ** 2).mean(1), p_te)]:
        th = float(np.percentile(s_tr_val, PERCENTILE))
        pr = (s_test > th).astype(int)
        base[bname] = {"auc": float(roc_auc_score(yte, s_test)), "precision": float(precision_score(yte, pr)),
                       "recall": float(recall_score(yte, pr))}
    C.log(NAME, f"TEST ROC AUC {auc:.4f}; threshold {threshold:.4f} (p{PERCENTILE:g} of val benign) -> "
                f"precision {prec:.4f} recall {rec:.4f} (benign false-positive rate {fpr:.4f})")
    for k, v in base.items():
        C.log(NAME, f"baseline {k}: AUC {v['auc']:.4f} precision {v['precision']:.4f} recall {v['recall']:.4f}")

    # Golden: 2 held-out benign + 2 malignant test rows (scaled).
    gi = [0, 1, len(ben_test), len(ben_test) + 1]  # 2 benign, 2 malignant
    C.write_golden(NAME, [torch.from_numpy(xte[gi]).contiguous()])
    names = [str(n) for n in ds.feature_names]
    C.write_config(NAME, "anomaly",
                   "Breast-cancer (Wisconsin diagnostic) anomaly scorer: autoencoder trained on benign rows; malignant = anomaly",
                   C.batching(64),
                   {"features": 30, "threshold": round(threshold, 6), "feature_names": names},
                   {"scaling": {"mean": [float(v) for v in mean32], "std": [float(v) for v in std32]}})
    total = time.time() - t_start
    metrics = {"test_auc": auc, "threshold": threshold, "threshold_percentile": PERCENTILE, "precision": prec,
               "recall": rec, "benign_false_positive_rate": fpr, "baselines": base, "selection": sel, "selected": [K, Q, NOISE],
               "validation_auc": val_auc,
               "train_seconds": train_secs, "total_seconds": total, "params": C.n_params(model),
               "model_bytes": path.stat().st_size}
    C.write_metrics(NAME, metrics)
    brows = "\n".join(f"| {k} | {v['auc']:.4f} | {v['precision']:.4f} | {v['recall']:.4f} |" for k, v in base.items())
    C.write_card(NAME, f"""
# cancer-ae

Anomaly scorer for the Wisconsin diagnostic breast-cancer features: an autoencoder trained on benign
tumours only; a malignant row reconstructs badly and scores high.

## Data
- Source: `sklearn.datasets.load_breast_cancer()` (`scikit-learn==1.6.1`), the Breast Cancer Wisconsin
  (Diagnostic) data set by W.H. Wolberg, W.N. Street and O.L. Mangasarian (UCI Machine Learning Repository,
  licence CC BY 4.0). 569 rows, 30 numeric features, {len(ben)} benign (normal) and {len(mal)} malignant (anomaly).
- Split (`train_test_split`, random_state={SPLIT_SEED}): benign rows -> 25% test ({len(ben_test)}), the rest 80/20 into
  **train ({len(ben_train)} benign)** and **validation ({len(ben_val)} benign)**; malignant rows -> 30% validation
  ({len(mal_val)}), 70% test ({len(mal_test)}). Only benign train rows are used for fitting.
  Validation (benign + malignant) chooses among {len(GRID)} settings; benign validation rows calibrate the threshold.
  **Test = {len(ben_test)} benign + {len(mal_test)} malignant**, never used in training, selection or calibration.
- Scaling: standardisation with the benign-train mean/std (`[anomaly.scaling]` in config.toml).

## Architecture
Denoising autoencoder 30 -> 16 (ELU) -> {K} -> 16 (ELU) -> 30, output `lo + (hi - lo) * sigmoid(.)` with
lo/hi the per-feature {Q:g} and {1 - Q:g} quantiles of the scaled benign training rows (a bounded decoder: the
reconstruction cannot leave the benign range, so extreme malignant values are not reproduced).
**{C.n_params(model):,} parameters**, TorchScript file {C.file_kb(path)}.

## Training
Full-batch AdamW (lr {LR}, weight decay 1e-3), {STEPS} steps, MSE reconstruction of clean rows from inputs with
Gaussian noise (sd {NOISE}). Model selection over bottleneck {{6, 10}} x range quantile {{0, 0.02}} x noise {{0.3, 0.7}}
by validation ROC AUC: selected bottleneck {K}, quantile {Q}, noise {NOISE} (validation AUC {val_auc:.4f}).
Seed {C.SEED}; {C.env_line()}. Training time {C.fmt_secs(train_secs)} (whole script {C.fmt_secs(total)}).

## Score and threshold
score = mean over the 30 features of (x_scaled - reconstruction)^2, as the server computes it.
**Threshold = {threshold:.6f}, the {PERCENTILE:g}th percentile of the scores of the {len(ben_val)} benign validation rows**
(a row is an anomaly when score > threshold).

## Held-out results (test: {len(ben_test)} benign + {len(mal_test)} malignant)
| scorer | ROC AUC | precision | recall |
|---|---|---|---|
{brows}
| **cancer-ae** | **{auc:.4f}** | **{prec:.4f}** | **{rec:.4f}** |

Precision/recall are for malignant = positive at each scorer's own p{PERCENTILE:g} validation threshold. Benign
false-positive rate of cancer-ae on test: {fpr:.4f}. Bar: ROC AUC >= 0.95 -> **{'met' if auc >= 0.95 else 'NOT met'}**.

## Tensor contract
- Input: `float32 [B, 30]`, `(x - mean) / std` with the config's scaling, features in the order of `feature_names`
  (sklearn's order).
- Output: `float32 [B, 30]`, the reconstruction in the same scaled space.

## Reproduce
`make models` (or `.venv/bin/python training/cancer_ae.py` from the repository root).
""")
    C.assert_bar(NAME, auc >= 0.95, f"test ROC AUC {auc:.4f} >= 0.95")
    return metrics


if __name__ == "__main__":
    main()
