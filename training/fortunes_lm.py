"""fortunes-lstm and fortunes-gru: character-level recurrent language models of Debian's fortune cookies
(the `fortunes` and `fortunes-min` packages), served by kind `language_model` (POST /complete).

Both models share the corpus, split, vocabulary, n-gram baseline (training/ngram.py) and recipe, and differ in
the recurrent layer. What is served is one recurrent step (`LSTMStep`, `GRUStep`), written as explicit matrix
products from the trained nn.LSTM / nn.GRU weights:

    forward(tokens int64 [B, 1], state float32 [B, S]) -> (logits float32 [B, V], state float32 [B, S])

A zero state row is the initial state; the server feeds "<s>", then the prompt's characters, then each drawn token.
LSTM state rows are concat(h over layers, c over layers) (S = 2 x layers x hidden), GRU rows h over layers
(S = layers x hidden).

Writes models/<name>/{1/model.pt,config.toml,README.md,metrics.json} and tests/data/golden/<name>.json for each;
training/export_pt2.py makes model.pt2 from model.pt. Run from the repository root:
    .venv/bin/python training/fortunes_lm.py            (both: the LSTM first, the GRU's card compares with it)
    .venv/bin/python training/fortunes_lm.py lstm|gru   (one)
    .venv/bin/python training/fortunes_lm.py --cards    (rewrite the model cards from metrics.json, no training)
"""
from __future__ import annotations

import os

# Before torch is imported: idle OpenMP threads sleep instead of spinning. On a 2-core machine shared with
# other work (a cargo build), spinning threads made training 5-10x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import copy
import hashlib
import json
import math
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
import ngram  # noqa: E402

CORPUS = Path("/usr/share/games/fortunes")
PACKAGES = ("fortunes", "fortunes-min")
INSTALL = "apt-get install -y --no-install-recommends fortunes fortunes-min"
SPLIT_SEED = 20240601
SPLIT = (0.90, 0.05, 0.05)      # train / validation / test, by fortune
MIN_COUNT = 20                  # a character needs this many occurrences in the training text to get a token
SPECIALS = ["<s>", "</s>", "<unk>"]
BOS, EOS, UNK = 0, 1, 2
MAX_ORDER = 6                   # n-gram baselines of orders 1..MAX_ORDER
BAR = 0.85                      # LM test bpc <= BAR x the best n-gram's

# Per model: the recurrent cell and the training recipe.
MODELS = {
    "lstm": dict(name="fortunes-lstm", cell="lstm", layers=1, hidden=512, emb=64, dropout=0.1,
                 epochs=7, batch=64, bptt=64, lr=3e-3, weight_decay=0.01, bf16=True, unknown="refuse"),
    "gru": dict(name="fortunes-gru", cell="gru", layers=1, hidden=512, emb=64, dropout=0.1,
                epochs=4, batch=64, bptt=64, lr=3e-3, weight_decay=0.01, bf16=True, unknown="<unk>"),
}
SECTION = dict(bos="<s>", eos="</s>", max_prompt_chars=4096, max_tokens=1024, default_max_tokens=200,
               max_sequences=64, max_n=8)
GOLDEN_BATCH = 3


# ----------------------------------------------------------------------------- corpus

def package_versions() -> dict[str, str]:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *PACKAGES],
                         capture_output=True, text=True)
    vers = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    missing = [p for p in PACKAGES if not vers.get(p)]
    if missing:
        raise SystemExit(f"fortunes corpus: the Debian package(s) {missing} are not installed; run `{INSTALL}`")
    return vers


def corpus_files() -> list[Path]:
    """The fortune files of the two packages (dpkg's file lists): regular files directly in CORPUS, without the
    index (.dat) and UTF-8 link (.u8) files, and nothing from the offensive `off/` subdirectory (another package)."""
    if not CORPUS.is_dir():
        raise SystemExit(f"fortunes corpus: {CORPUS} is missing; install the Debian packages fortunes and "
                         f"fortunes-min (`{INSTALL}`, or `make models`, which does it)")
    versions = package_versions()
    out = subprocess.run(["dpkg-query", "-L", *PACKAGES], capture_output=True, text=True, check=True)
    files = sorted({Path(p) for p in out.stdout.split("\n")
                    if p.startswith(f"{CORPUS}/") and Path(p).parent == CORPUS})
    files = [p for p in files if p.suffix not in (".dat", ".u8") and p.is_file() and not p.is_symlink()]
    if not files:
        raise SystemExit(f"fortunes corpus: no fortune files of {PACKAGES} ({versions}) found in {CORPUS}")
    return files


def load_fortunes() -> tuple[list[str], dict]:
    """Every fortune of every file (files in name order), separated by lines holding a single "%", trailing
    whitespace stripped, internal newlines kept, empty ones dropped, duplicates dropped (the first kept)."""
    files = corpus_files()
    seen, out, raw = set(), [], 0
    h = hashlib.sha256()
    for p in files:
        text = p.read_bytes()
        h.update(p.name.encode() + b"\0" + text)
        cur: list[str] = []
        for line in text.decode("utf-8").split("\n") + ["%"]:
            if line == "%":
                t = "\n".join(cur).rstrip()
                cur = []
                if t.strip():
                    raw += 1
                    if t not in seen:
                        seen.add(t)
                        out.append(t)
            else:
                cur.append(line)
    info = {"files": [p.name for p in files], "fortunes": raw, "unique": len(out), "sha256": h.hexdigest(),
            "versions": package_versions()}
    return out, info


def split(fortunes: list[str]) -> dict[str, list[str]]:
    """Random split by fortune with a fixed seed: test, validation, then the rest for training."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(fortunes))
    n_test = n_val = round(SPLIT[2] * len(fortunes))
    pick = lambda idx: [fortunes[i] for i in idx]  # noqa: E731
    return {"test": pick(perm[:n_test]), "val": pick(perm[n_test:n_test + n_val]),
            "train": pick(perm[n_test + n_val:])}


def build_vocab(train: list[str]) -> list[str]:
    counts = Counter("".join(train))
    return SPECIALS + sorted(ch for ch, n in counts.items() if n >= MIN_COUNT)


def encode(text: str, stoi: dict[str, int]) -> np.ndarray:
    return np.array([BOS] + [stoi.get(ch, UNK) for ch in text] + [EOS], dtype=np.int64)


class Data:
    """Corpus, split, vocabulary and encoded sequences (BOS + text + EOS), loaded once for both models."""

    def __init__(self):
        fortunes, self.info = load_fortunes()
        self.split = split(fortunes)
        self.vocab = build_vocab(self.split["train"])
        self.stoi = {t: i for i, t in enumerate(self.vocab)}
        self.seqs = {k: [encode(t, self.stoi) for t in v] for k, v in self.split.items()}
        self.tokens = {k: sum(len(s) - 1 for s in v) for k, v in self.seqs.items()}  # predicted tokens
        self.unk = {k: int(sum((s == UNK).sum() for s in v)) for k, v in self.seqs.items()}
        chars = Counter("".join(self.split["train"]))
        self.rare = sorted(ch for ch, n in chars.items() if n < MIN_COUNT)
        self._ngram = None
        self._shared = None

    def shared_40(self) -> dict:
        """Test text shared with the training text: the share of the test fortunes' characters inside a
        40-character string that also occurs in the training text, the number of test fortunes with such a string,
        and the number of those that it covers for more than 90 %."""
        if self._shared is None:
            K = 40
            train = "\n".join(self.split["train"])
            grams = {train[i:i + K] for i in range(len(train) - K + 1)}
            covered = total = fortunes = mostly = 0
            for t in self.split["test"]:
                hit = np.zeros(len(t), dtype=bool)
                for i in range(len(t) - K + 1):
                    if t[i:i + K] in grams:
                        hit[i:i + K] = True
                covered, total = covered + int(hit.sum()), total + len(t)
                fortunes += bool(hit.any())
                mostly += bool(hit.mean() > 0.9)
            self._shared = {"char_share": covered / total, "fortunes": fortunes, "fortunes_over_90pct": mostly}
        return self._shared

    def ngram(self) -> dict:
        """Held-out bits per token of the interpolated modified Kneser-Ney models of orders 1..MAX_ORDER."""
        if self._ngram is None:
            t0 = time.time()
            lm = ngram.KneserNey(MAX_ORDER, len(self.vocab), BOS).fit(self.seqs["train"])
            res = {"val": {}, "test": {}}
            for n in range(1, MAX_ORDER + 1):
                for part in ("val", "test"):
                    res[part][n] = lm.bits(self.seqs[part], n) / self.tokens[part]
            best = min(res["test"], key=res["test"].get)
            res.update(best_order=best, best_test=res["test"][best],
                       best_order_by_val=min(res["val"], key=res["val"].get), seconds=time.time() - t0,
                       discounts={f"{k}-{kind}": list(d) for (k, kind), d in lm.discounts.items()})
            self._ngram = res
        return self._ngram


# ----------------------------------------------------------------------------- models

class CharLM(nn.Module):
    """Embedding -> nn.LSTM / nn.GRU -> dropout -> linear to the vocabulary; what is trained."""

    def __init__(self, cell: str, vocab: int, emb: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.cell, self.layers, self.hidden = cell, layers, hidden
        self.emb = nn.Embedding(vocab, emb)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(emb, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, state=None):
        e = self.drop(self.emb(x))
        if self.cell == "gru" and self.training:
            y, state = gru_scan(self.rnn, e, state, torch.is_autocast_enabled("cpu"))
        else:
            y, state = self.rnn(e, state)
        return self.out(self.drop(y)), state


class GRUScan(torch.autograd.Function):
    """One GRU layer's recurrence over time, with a hand-written backward through time, for training: on CPU
    nn.GRU has no oneDNN kernel and autocast leaves it in float32, and autograd through a Python loop of steps is
    slower still. Input gi = x W_ih^T + b_ih [B, T, 3H] (float32) and h0 [B, H]; returns every h [B, T, H].
    The per-step products with W_hh run in bfloat16 when `bf16` (AMX), the gates and the state in float32; the
    weight gradient is one product over all steps. PyTorch's equations and gate order (r, z, n):
    r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r gh_n), h' = n + z (h - n),
    gh = h W_hh^T + b_hh. Checked against nn.GRU's forward and autograd gradients by `check_gru_scan`."""

    @staticmethod
    def forward(ctx, gi, h0, w_hh, b_hh, bf16: bool):
        dt = torch.bfloat16 if bf16 else torch.float32
        with torch.autocast("cpu", enabled=False):
            B, T, H3 = gi.shape
            H = H3 // 3
            w = w_hh.detach().to(dt).t().contiguous()
            h = h0
            hs, rs, zs, ns, ghns = (gi.new_empty(B, T, H) for _ in range(5))
            for t in range(T):
                gh = (h.to(dt) @ w).float() + b_hh
                g = gi[:, t]
                r = torch.sigmoid(g[:, :H] + gh[:, :H])
                z = torch.sigmoid(g[:, H:2 * H] + gh[:, H:2 * H])
                ghn = gh[:, 2 * H:]
                n = torch.tanh(g[:, 2 * H:] + r * ghn)
                h = n + z * (h - n)
                hs[:, t], rs[:, t], zs[:, t], ns[:, t], ghns[:, t] = h, r, z, n, ghn
        ctx.save_for_backward(h0, w_hh, hs, rs, zs, ns, ghns)
        ctx.dt = dt
        return hs

    @staticmethod
    def backward(ctx, dhs):
        h0, w_hh, hs, rs, zs, ns, ghns = ctx.saved_tensors
        dt = ctx.dt
        B, T, H = hs.shape
        w = w_hh.to(dt)                                                   # [3H, H]
        hprev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], 1)
        dgh_s, dgi_s = hs.new_empty(B, T, 3 * H), hs.new_empty(B, T, 3 * H)
        dh = torch.zeros_like(h0)
        for t in range(T - 1, -1, -1):
            dh = dh + dhs[:, t]
            r, z, n, ghn, hp = rs[:, t], zs[:, t], ns[:, t], ghns[:, t], hprev[:, t]
            dan = dh * (1 - z) * (1 - n * n)                              # d pre-activation of n
            dar = dan * ghn * r * (1 - r)
            daz = dh * (hp - n) * z * (1 - z)
            dgi, dgh = dgi_s[:, t], dgh_s[:, t]
            dgi[:, :H], dgi[:, H:2 * H], dgi[:, 2 * H:] = dar, daz, dan
            dgh[:, :H], dgh[:, H:2 * H], dgh[:, 2 * H:] = dar, daz, dan * r
            dh = dh * z + (dgh.to(dt) @ w).float()
        dw = (dgh_s.reshape(-1, 3 * H).t().to(dt) @ hprev.reshape(-1, H).to(dt)).float()
        return dgi_s, dh, dw, dgh_s.sum((0, 1)), None


def gru_scan(rnn: nn.GRU, x: torch.Tensor, h0: torch.Tensor | None, bf16: bool):
    """nn.GRU's forward (batch first, without dropout between layers) through GRUScan, with rnn's parameters."""
    B = x.shape[0]
    hs = []
    for k in range(rnn.num_layers):
        gi = F.linear(x, getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"bias_ih_l{k}")).float()
        h = h0[k].float() if h0 is not None else gi.new_zeros(B, rnn.hidden_size)
        x = GRUScan.apply(gi, h, getattr(rnn, f"weight_hh_l{k}"), getattr(rnn, f"bias_hh_l{k}"), bf16)
        hs.append(x[:, -1])
    return x, torch.stack(hs)


def check_gru_scan() -> float:
    """Largest difference between gru_scan (float32) and nn.GRU: outputs, final state and every parameter's
    gradient, on a small 2-layer GRU."""
    g = torch.Generator().manual_seed(0)
    rnn = nn.GRU(8, 16, 2, batch_first=True)
    x, h0, w = torch.randn(3, 7, 8, generator=g), torch.randn(2, 3, 16, generator=g), torch.randn(3, 7, 16, generator=g)
    res = []
    for fn in (lambda: rnn(x, h0), lambda: gru_scan(rnn, x, h0, False)):
        rnn.zero_grad()
        y, h = fn()
        ((y * w).sum() + h.sum()).backward()
        res.append([y.detach(), h.detach()] + [p.grad.clone() for p in rnn.parameters()])
    return max(float((a - b).abs().max()) for a, b in zip(*res))


class LSTMLayer(nn.Module):
    def __init__(self, inp: int, hidden: int):
        super().__init__()
        self.w_ih = nn.Parameter(torch.zeros(4 * hidden, inp))
        self.w_hh = nn.Parameter(torch.zeros(4 * hidden, hidden))
        self.b_ih = nn.Parameter(torch.zeros(4 * hidden))
        self.b_hh = nn.Parameter(torch.zeros(4 * hidden))

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gates = x @ self.w_ih.t() + self.b_ih + h @ self.w_hh.t() + self.b_hh
        i, f, g, o = gates.chunk(4, 1)                                   # PyTorch's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class GRULayer(nn.Module):
    def __init__(self, inp: int, hidden: int):
        super().__init__()
        self.w_ih = nn.Parameter(torch.zeros(3 * hidden, inp))
        self.w_hh = nn.Parameter(torch.zeros(3 * hidden, hidden))
        self.b_ih = nn.Parameter(torch.zeros(3 * hidden))
        self.b_hh = nn.Parameter(torch.zeros(3 * hidden))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        xr, xz, xn = (x @ self.w_ih.t() + self.b_ih).chunk(3, 1)          # PyTorch's gate order: r, z, n
        hr, hz, hn = (h @ self.w_hh.t() + self.b_hh).chunk(3, 1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1.0 - z) * n + z * h


class LSTMStep(nn.Module):
    """The served LSTM: one step, forward(tokens [B, 1] int64, state [B, 2*L*H]) -> (logits [B, V], state).
    A state row is concat(h of layers 0..L-1, c of layers 0..L-1); zeros are the initial state."""

    def __init__(self, vocab: int, emb: int, hidden: int, layers: int):
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.emb = nn.Parameter(torch.zeros(vocab, emb))
        self.cells = nn.ModuleList([LSTMLayer(emb if k == 0 else hidden, hidden) for k in range(layers)])
        self.out_w = nn.Parameter(torch.zeros(vocab, hidden))
        self.out_b = nn.Parameter(torch.zeros(vocab))

    def forward(self, tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.embedding(tokens[:, 0], self.emb)
        H, L = self.hidden, self.layers
        hs: list[torch.Tensor] = []
        cs: list[torch.Tensor] = []
        for k, cell in enumerate(self.cells):
            h, c = cell(x, state[:, k * H:(k + 1) * H], state[:, (L + k) * H:(L + k + 1) * H])
            hs.append(h)
            cs.append(c)
            x = h
        return x @ self.out_w.t() + self.out_b, torch.cat(hs + cs, dim=1)


class GRUStep(nn.Module):
    """The served GRU: one step, forward(tokens [B, 1] int64, state [B, L*H]) -> (logits [B, V], state).
    A state row is concat(h of layers 0..L-1); zeros are the initial state."""

    def __init__(self, vocab: int, emb: int, hidden: int, layers: int):
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.emb = nn.Parameter(torch.zeros(vocab, emb))
        self.cells = nn.ModuleList([GRULayer(emb if k == 0 else hidden, hidden) for k in range(layers)])
        self.out_w = nn.Parameter(torch.zeros(vocab, hidden))
        self.out_b = nn.Parameter(torch.zeros(vocab))

    def forward(self, tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.embedding(tokens[:, 0], self.emb)
        H = self.hidden
        hs: list[torch.Tensor] = []
        for k, cell in enumerate(self.cells):
            x = cell(x, state[:, k * H:(k + 1) * H])
            hs.append(x)
        return x @ self.out_w.t() + self.out_b, torch.cat(hs, dim=1)


def state_size(cfg: dict) -> int:
    return (2 if cfg["cell"] == "lstm" else 1) * cfg["layers"] * cfg["hidden"]


def make_step(cfg: dict, vocab: int) -> nn.Module:
    cls = LSTMStep if cfg["cell"] == "lstm" else GRUStep
    return cls(vocab, cfg["emb"], cfg["hidden"], cfg["layers"])


def step_from(model: CharLM, cfg: dict) -> nn.Module:
    """The step module holding the trained model's weights (copied, not shared)."""
    step = make_step(cfg, model.out.out_features)
    with torch.no_grad():
        step.emb.copy_(model.emb.weight)
        for k, cell in enumerate(step.cells):
            for ours, theirs in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh")):
                getattr(cell, ours).copy_(getattr(model.rnn, f"{theirs}_l{k}"))
        step.out_w.copy_(model.out.weight)
        step.out_b.copy_(model.out.bias)
    return step.eval()


def export_spec(key: str):
    """Factory and example inputs for training/export_pt2.py: the step module with the shapes of the shipped
    model.pt (V, E, H and the layer count read from its parameters; checked against config.toml's vocab and
    state_size), to be given model.pt's state_dict."""
    cfg = MODELS[key]
    sd = torch.jit.load(str(C.model_path(cfg["name"])), map_location="cpu").state_dict()
    V, E = sd["emb"].shape
    H = sd["cells.0.w_hh"].shape[1]
    layers = sum(1 for k in sd if k.endswith(".w_hh"))
    shape = dict(cfg, hidden=H, layers=layers, emb=E)
    section = tomllib.loads((C.MODELS / cfg["name"] / "config.toml").read_text())["language_model"]
    S = state_size(shape)
    assert (len(section["vocab"]), section["state_size"]) == (V, S), (section["state_size"], V, S)
    return (lambda: make_step(shape, V)), (torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, S))


# ----------------------------------------------------------------------------- training and evaluation

@torch.no_grad()
def evaluate(model: CharLM, seqs: list[np.ndarray], batch: int = 128) -> float:
    """Bits per predicted token: each sequence from a zero state (as served), every token after BOS predicted."""
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    bits, n = 0.0, 0
    for i in range(0, len(order), batch):
        group = [seqs[j] for j in order[i:i + batch]]
        T = max(len(s) for s in group)
        x = torch.full((len(group), T), EOS, dtype=torch.long)
        mask = torch.zeros(len(group), T - 1, dtype=torch.bool)
        for r, s in enumerate(group):
            x[r, :len(s)] = torch.from_numpy(s)
            mask[r, :len(s) - 1] = True
        logits, _ = model(x[:, :-1])
        nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        bits += float(nll[mask].sum()) / math.log(2)
        n += int(mask.sum())
    return bits / n


def train(data: Data, cfg: dict, tag: str):
    """Truncated BPTT over the training fortunes concatenated in a fresh random order each epoch, cut into
    `batch` parallel streams whose state is carried (detached) from one window of `bptt` steps to the next.
    Targets that are BOS (after an EOS) are not scored. AdamW, linear warm-up then cosine decay, clipping 1.0.
    Keeps the weights of the epoch with the best validation bpc."""
    if cfg["cell"] == "gru":
        diff = check_gru_scan()
        C.log(cfg["name"], f"GRUScan vs nn.GRU (outputs, state, gradients): max difference {diff:.1e}")
        assert diff < 1e-4, diff
        cfg["_gru_scan_check"] = diff
    torch.manual_seed(C.SEED)
    rng = np.random.default_rng(C.SEED)
    V = len(data.vocab)
    model = CharLM(cfg["cell"], V, cfg["emb"], cfg["hidden"], cfg["layers"], cfg["dropout"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.99), weight_decay=cfg["weight_decay"])
    B, T, E = cfg["batch"], cfg["bptt"], cfg["epochs"]
    steps_per_epoch = (data.tokens["train"] + len(data.seqs["train"])) // (B * T)
    total = E * steps_per_epoch
    warm = max(1, total // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    prog = C.Progress(f"{cfg['name']}:{tag}", E)
    history, best = [], (math.inf, None, 0)
    for ep in range(1, E + 1):
        model.train()
        order = rng.permutation(len(data.seqs["train"]))
        stream = np.concatenate([data.seqs["train"][i] for i in order])
        n = (len(stream) - 1) // (B * T) * (B * T)
        xs = torch.from_numpy(stream[:n]).view(B, -1)
        ys = torch.from_numpy(stream[1:n + 1]).view(B, -1)
        state, tot, cnt = None, 0.0, 0
        for j in range(0, xs.shape[1], T):
            x, y = xs[:, j:j + T], ys[:, j:j + T]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg["bf16"]):
                logits, state = model(x, state)
            logits = logits.float()
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=BOS)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tot += loss.item() * int((y != BOS).sum())
            cnt += int((y != BOS).sum())
        val = evaluate(model, data.seqs["val"])
        history.append({"epoch": ep, "train_bpc": tot / cnt / math.log(2), "val_bpc": val,
                        "seconds": prog.elapsed()})
        if val < best[0]:
            best = (val, copy.deepcopy(model.state_dict()), ep)
        prog.step(ep, f"train bpc {tot / cnt / math.log(2):.4f} | val bpc {val:.4f} (best {best[0]:.4f} @ {best[2]})")
    model.load_state_dict(best[1])
    return model.eval(), best[2], history, prog.elapsed()


@torch.no_grad()
def sequence_check(model: CharLM, step: nn.Module, seqs: list[np.ndarray]) -> float:
    """Largest |logit| difference between the trained module over whole sequences (zero initial state) and the
    step module fed the same tokens one at a time."""
    model.eval()
    worst = 0.0
    for s in seqs:
        x = torch.from_numpy(s[:-1]).view(1, -1)
        want, _ = model(x)
        st = torch.zeros(1, step_size(step))
        for t in range(x.shape[1]):
            got, st = step(x[:, t:t + 1], st)
            worst = max(worst, float((got - want[:, t]).abs().max()))
    return worst


def step_size(step: nn.Module) -> int:
    return (2 if isinstance(step, LSTMStep) else 1) * step.layers * step.hidden


@torch.no_grad()
def generate(step, S: int, vocab: list[str], prompt: str, temperature: float, seed: int,
             max_tokens: int = 200) -> str:
    """What the server does: <s>, the prompt (characters outside the vocabulary as <unk>), then tokens drawn
    (greedy when temperature is 0) among the drawable ones (characters and </s>) until </s> or max_tokens."""
    stoi = {t: i for i, t in enumerate(vocab)}
    g = torch.Generator().manual_seed(seed)
    state = torch.zeros(1, S)
    ids = [BOS] + [stoi.get(ch, UNK) for ch in prompt]
    for t in ids:
        logits, state = step(torch.tensor([[t]]), state)
    out = []
    for _ in range(max_tokens):
        logits = logits[0].clone()
        logits[BOS] = logits[UNK] = -math.inf
        if temperature == 0:
            t = int(logits.argmax())
        else:
            t = int(torch.multinomial(torch.softmax(logits / temperature, 0), 1, generator=g))
        if t == EOS:
            break
        out.append(vocab[t])
        logits, state = step(torch.tensor([[t]]), state)
    return "".join(out)


def show(text: str) -> str:
    """A sample for a Markdown code block: control characters other than newline and tab escaped."""
    return "".join(ch if ch in "\n\t" or ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


# ----------------------------------------------------------------------------- one model end to end

def run(key: str, data: Data | None = None) -> dict:
    C.setup()
    t_start = time.time()
    cfg = dict(MODELS[key])
    name = cfg["name"]
    data = data or Data()
    V, S = len(data.vocab), state_size(cfg)
    info = data.info
    C.log(name, f"corpus: {len(info['files'])} files of {info['versions']}, {info['fortunes']} fortunes, "
                f"{info['unique']} unique; split {len(data.split['train'])}/{len(data.split['val'])}/"
                f"{len(data.split['test'])} fortunes, {data.tokens['train']}/{data.tokens['val']}/"
                f"{data.tokens['test']} predicted tokens; vocabulary {V} tokens")
    ng = data.ngram()
    for n in range(1, MAX_ORDER + 1):
        C.log(name, f"{n}-gram (interpolated modified Kneser-Ney): val {ng['val'][n]:.4f} bpc, test {ng['test'][n]:.4f} bpc")
    bar_bpc = BAR * ng["best_test"]
    C.log(name, f"best n-gram: order {ng['best_order']}, test {ng['best_test']:.4f} bpc -> bar {bar_bpc:.4f} bpc")

    load0 = os.getloadavg()[0]
    model, best_ep, history, t_train = train(data, cfg, cfg["cell"])
    load1 = os.getloadavg()[0]
    val_bpc = evaluate(model, data.seqs["val"])
    test_bpc = evaluate(model, data.seqs["test"])
    ratio = test_bpc / ng["best_test"]
    C.log(name, f"TEST {test_bpc:.4f} bpc (val {val_bpc:.4f}, epoch {best_ep}); ratio to the best n-gram {ratio:.4f}")

    step = step_from(model, cfg)
    check = sorted(data.seqs["val"], key=len)[-3:] + data.seqs["val"][:5]   # the 3 longest and 5 others
    seq_diff = sequence_check(model, step, check)
    C.log(name, f"step module vs nn.{cfg['cell'].upper()} over {len(check)} whole sequences "
                f"({sum(len(s) - 1 for s in check)} steps): max |logit difference| {seq_diff:.2e}")
    assert seq_diff < 1e-4, seq_diff
    path = C.save_torchscript(step, name)
    ts = torch.jit.load(str(path)).eval()
    g = torch.Generator().manual_seed(C.SEED)
    tokens = torch.randint(0, V, (GOLDEN_BATCH, 1), generator=g)
    state = torch.randn(GOLDEN_BATCH, S, generator=g) * 0.5
    with torch.no_grad():
        (l1, s1), (l2, s2) = step(tokens, state), ts(tokens, state)
        ts_diff = max(float((l1 - l2).abs().max()), float((s1 - s2).abs().max()))
        assert l2.shape == (GOLDEN_BATCH, V) and s2.shape == (GOLDEN_BATCH, S) and l2.dtype == torch.float32
        z = ts(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, S))
        assert z[0].shape == (1, V) and z[1].shape == (1, S)
    C.log(name, f"TorchScript vs eager step: max difference {ts_diff:.2e}")
    C.write_golden(name, [tokens, state])

    section = {"vocab": data.vocab, "bos": SECTION["bos"], "eos": SECTION["eos"], "unknown": cfg["unknown"],
               "state_size": S, **{k: v for k, v in SECTION.items() if k not in ("bos", "eos")}}
    batching = C.batching(64)
    batching["queue_capacity"] = 1024
    desc = (f"Character-level {cfg['cell'].upper()} language model of Debian's fortune cookies "
            f"({cfg['layers']} x {cfg['hidden']}, one recurrent step per forward)")
    top = {"default_for_kind": True} if name == "fortunes-lstm" else None
    cpath = C.write_config(name, "language_model", desc, batching, section, top=top)
    back = tomllib.loads(cpath.read_text())
    assert back["language_model"]["vocab"] == data.vocab, "vocab does not round-trip through config.toml"
    assert back["language_model"] == section and back["batching"] == batching

    samples = [("greedy", "", 0.0, 0), ("T = 0.8, seed 1", "A ", 0.8, 1), ("T = 0.8, seed 2", "Q: ", 0.8, 2),
               ("T = 0.8, seed 3", "", 0.8, 3)]
    texts = [(label, prompt, generate(ts, S, data.vocab, prompt, temp, seed))
             for label, prompt, temp, seed in samples]
    for label, prompt, text in texts:
        C.log(name, f"sample ({label}, prompt {prompt!r}): {(prompt + text)[:120]!r}")

    total = time.time() - t_start
    n_par = C.n_params(model)
    metrics = {
        "test_bpc": test_bpc, "val_bpc": val_bpc, "ratio_to_best_ngram": ratio, "bar": BAR, "bar_bpc": bar_bpc,
        "bar_met": test_bpc <= bar_bpc,
        "ngram": {"smoothing": "interpolated modified Kneser-Ney (Chen & Goodman discounts D1, D2, D3+ per order)",
                  "val_bpc": ng["val"], "test_bpc": ng["test"], "best_order": ng["best_order"],
                  "best_test_bpc": ng["best_test"], "best_order_by_val": ng["best_order_by_val"],
                  "seconds": ng["seconds"], "discounts": ng["discounts"]},
        "bpc_unit": "bits per predicted token (every token after <s>, </s> included)",
        "architecture": {k: cfg[k] for k in ("cell", "layers", "hidden", "emb", "dropout")},
        "vocab_size": V, "state_size": S, "params": n_par, "model_bytes": path.stat().st_size,
        "training": {k: cfg[k] for k in ("epochs", "batch", "bptt", "lr", "weight_decay")},
        "selected_epoch": best_ep, "history": history, "train_seconds": t_train, "total_seconds": total,
        "load_average": [load0, load1], "gru_scan_check": cfg.get("_gru_scan_check"),
        "step_vs_rnn_max_abs_diff": seq_diff, "torchscript_vs_eager_max_abs_diff": ts_diff,
        "data": {"files": info["files"], "versions": info["versions"], "corpus_sha256": info["sha256"],
                 "fortunes": info["fortunes"], "unique": info["unique"],
                 "split_fortunes": {k: len(v) for k, v in data.split.items()}, "split_tokens": data.tokens,
                 "unk_tokens": data.unk, "rare_chars": data.rare,
                 "test_shared_40grams": data.shared_40()},
        "samples": [{"label": lab, "prompt": p, "text": t} for lab, p, t in texts],
    }
    C.write_metrics(name, metrics)
    C.write_card(name, card(cfg, data, metrics, path))
    what = f"test {test_bpc:.4f} bpc <= {BAR} x best n-gram {ng['best_test']:.4f} = {bar_bpc:.4f} (ratio {ratio:.4f})"
    if test_bpc <= bar_bpc:
        C.log(name, f"BAR MET: {what}")
    else:
        # Reported, not fatal: the bar (15 % below the best smoothed 6-gram) is not reached within
        # this CPU budget (the card gives the trials), and stopping here would stop `make models` for every
        # model after this one. The card and metrics.json say "not met".
        C.log(name, f"BAR NOT MET (reported in the card, not fatal): {what}")
    return metrics


def _esc(ch: str) -> str:
    return {"\n": "\\n", "\t": "\\t", " ": "space"}.get(ch, show(ch))


def _fence(text: str) -> str:
    return "````\n" + show(text) + "\n````"


def card(cfg: dict, data: Data, m: dict, path: Path) -> str:
    name, cell = cfg["name"], cfg["cell"].upper()
    ng, d, info = m["ngram"], m["data"], data.info
    sh = d["test_shared_40grams"]
    vers = info["versions"]
    V, S, H, Lr = m["vocab_size"], m["state_size"], cfg["hidden"], cfg["layers"]
    chars = data.vocab[len(SPECIALS):]
    ng_rows = "\n".join(f"| {n} | {ng['val_bpc'][n]:.4f} | {ng['test_bpc'][n]:.4f} |" for n in range(1, MAX_ORDER + 1))
    hist = "\n".join(f"| {h['epoch']} | {h['train_bpc']:.4f} | {h['val_bpc']:.4f} | {C.fmt_secs(h['seconds'])} |"
                     for h in m["history"])
    samples = "\n\n".join(f"{s['label']}, prompt {json.dumps(s['prompt'])} (the prompt is shown, then the "
                          f"completion, up to 200 tokens or `</s>`):\n\n{_fence(s['prompt'] + s['text'])}"
                          for s in m["samples"])
    if cell == "LSTM":
        hv = "h_0, c_0" if Lr == 1 else f"h_0 .. h_{Lr - 1}, c_0 .. c_{Lr - 1}"
        step_text = (f"a state row is `concat({hv})`, the hidden and cell vectors of "
                     f"each layer, so **S = 2 x {Lr} x {H} = {S}**. Per layer: `gates = x W_ih^T + b_ih + h W_hh^T + "
                     f"b_hh`, split in PyTorch's order (i, f, g, o); `c' = sigmoid(f) c + sigmoid(i) tanh(g)`, "
                     f"`h' = sigmoid(o) tanh(c')`")
        unknown = ('`unknown = "refuse"`: a prompt character outside the vocabulary is refused (422 naming it and '
                   'its position)')
    else:
        hv = "h_0" if Lr == 1 else f"h_0 .. h_{Lr - 1}"
        step_text = (f"a state row is `{hv}`{'' if Lr == 1 else ' concatenated'}, the hidden vector of each layer, so **S = {Lr} x {H} "
                     f"= {S}**. Per layer, in PyTorch's order (r, z, n): `r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)`, "
                     f"`z` likewise, `n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn))`, `h' = (1 - z) n + z h`")
        unknown = ('`unknown = "<unk>"`: a prompt character outside the vocabulary is fed as `<unk>` (id 2), the '
                   'token every rarer character of the training text was mapped to')
    if cell == "LSTM":
        train_impl = ("Mixed precision: under bfloat16 autocast nn.LSTM runs oneDNN's fused LSTM kernel with AMX "
                      "(about 4x faster than float32 here); the weights, the optimizer and all evaluation are float32. "
                      "PyTorch's default initialisation (a trial with the forget-gate bias at 1, on a 6-epoch "
                      "schedule, learned more slowly: validation 2.64 / 2.43 bpc after epochs 1 / 2).")
    else:
        train_impl = ("Mixed precision: the GRU's recurrence runs through `GRUScan` (`training/fortunes_lm.py`), a "
                      "loop over time steps with a hand-written backward pass whose per-step products with W_hh are "
                      "bfloat16 (AMX), gates and state float32, on nn.GRU's own parameters (checked against nn.GRU's "
                      f"outputs and autograd gradients before training: within {m['gru_scan_check']:.0e}); the input "
                      "and output layers run under bfloat16 autocast; the weights, the optimizer and all evaluation "
                      "(nn.GRU itself) are float32.")
    compare = ""
    if cfg["cell"] == "gru":
        lp = C.MODELS / MODELS["lstm"]["name"] / "metrics.json"
        lm = json.loads(lp.read_text()) if lp.exists() else None
        if lm and lm["data"]["corpus_sha256"] == d["corpus_sha256"] and lm["data"]["split_tokens"] == d["split_tokens"] \
                and lm["vocab_size"] == V:
            r = m["test_bpc"] / lm["test_bpc"]
            la = lm["architecture"]
            per_ep = lambda mm: mm["history"][-1]["seconds"] / len(mm["history"])  # noqa: E731
            fewer = (", so within the same ~10-minute budget it was given fewer epochs"
                     if cfg["epochs"] < lm["training"]["epochs"] else "")
            compare = f"""
## GRU vs LSTM
Same corpus, split, vocabulary, n-gram bar and training recipe as `fortunes-lstm` (trained just before it by the same
script), different recurrent layer:

| | fortunes-lstm | fortunes-gru |
|---|---|---|
| recurrent layer | LSTM {la['layers']} x {la['hidden']} | GRU {Lr} x {H} |
| parameters | {lm['params']:,} | {m['params']:,} |
| state floats per sequence (S) | {lm['state_size']} | {S} |
| epochs (selected) | {lm['training']['epochs']} ({lm['selected_epoch']}) | {cfg['epochs']} ({m['selected_epoch']}) |
| training time | {C.fmt_secs(lm['train_seconds'])} ({C.fmt_secs(per_ep(lm))} per epoch) | {C.fmt_secs(m['train_seconds'])} ({C.fmt_secs(per_ep(m))} per epoch) |
| validation bpc | {lm['val_bpc']:.4f} | {m['val_bpc']:.4f} |
| **test bpc** | **{lm['test_bpc']:.4f}** | **{m['test_bpc']:.4f}** |
| test bpc / best n-gram | {lm['ratio_to_best_ngram']:.4f} | {m['ratio_to_best_ngram']:.4f} |

GRU / LSTM test bpc = **{r:.4f}** ({'GRU better' if r < 1 else 'LSTM better' if r > 1 else 'equal'}). On CPU, PyTorch
trains nn.LSTM in bfloat16 through oneDNN's fused kernel, while the GRU goes through `GRUScan`, a loop of per-step
products in Python (PyTorch has no oneDNN GRU), slower per epoch (table){fewer}. Both times were measured on a 2-core
machine shared with other jobs (load averages in `metrics.json`), so they are indicative only.
"""
        else:
            compare = ("\n## GRU vs LSTM\nNo comparison: `models/fortunes-lstm/metrics.json` is missing or was made "
                       "from other data (run `training/fortunes_lm.py` without arguments to train both).\n")
    return f"""
# {name}

Character-level language model of the fortune cookies of Debian's `fortunes` and `fortunes-min` packages: an
embedding, {'an' if cell == 'LSTM' else 'a'} {cell} ({Lr} layer{'s' if Lr > 1 else ''} of {H}) and a linear layer to the {V}-token vocabulary, served by
kind `language_model` (`POST /complete`) one recurrent step per forward: it continues a prompt one character at a
time (samples at the end). Trained for {C.fmt_secs(m['train_seconds'])} on {d['split_tokens']['train'] / 1e6:.2f}
million characters on CPU.

## Data
- Source: the Debian packages **`fortunes` {vers['fortunes']}** and **`fortunes-min` {vers['fortunes-min']}**, the
  fortune files of BSD `fortune(6)` as packaged by Debian from fortune-mod 1.99.1 (upstream source named by the
  packages: http://www.redellipse.net/code/downloads/fortune-mod-1.99.1.tar.gz), installed under
  `/usr/share/games/fortunes/` (`make models` installs them when missing:
  `apt-get install -y --no-install-recommends fortunes fortunes-min`). Files used (each package's own files, from
  `dpkg-query -L`; the `.dat` indexes and `.u8` links skipped, the offensive `off/` collection never read):
  {', '.join(f'`{f}`' for f in d['files'])}. SHA-256 over the file names and contents: `{d['corpus_sha256'][:16]}...`.
- Licence: `/usr/share/doc/fortunes/copyright` and `/usr/share/doc/fortunes-min/copyright` (identical) state that the
  package "falls under the BSD copyright": Copyright (c) 1991 The Regents of the University of California, the BSD
  licence with its advertising clause (3) deleted; they also note that the `cookie` file is from Karl Lehenbauer's
  postings to alt.sources and carry the header of the atheism file (Wayne Aiken). The fortunes themselves are
  quotations from many authors.
- Preprocessing: each file split at lines holding a single `%`; each fortune stripped of trailing whitespace
  (internal newlines, tabs and leading indentation kept), empty ones dropped: {d['fortunes']:,} fortunes, of which
  **{d['unique']:,} unique** (identical ones deduplicated, the first kept). Each is one sequence
  `<s>` + text + `</s>`.
- Split, by fortune, a random permutation with seed {SPLIT_SEED}: **train {d['split_fortunes']['train']:,} fortunes
  ({d['split_tokens']['train']:,} predicted tokens), validation {d['split_fortunes']['val']:,}
  ({d['split_tokens']['val']:,}), test {d['split_fortunes']['test']:,} ({d['split_tokens']['test']:,})**; the test
  fortunes are held out from everything (training, epoch selection, n-gram fitting).
- Vocabulary (**V = {V}**): `<s>` (id 0, fed first, never drawn), `</s>` (id 1, ends a fortune), `<unk>` (id 2), then
  the {len(chars)} characters that occur at least {MIN_COUNT} times in the training text, in code-point order (this
  includes `\\n`, `\\t`, and the control characters BEL `\\x07` and backspace `\\x08` that a few fortunes use for
  overstruck text):

  {' '.join(f'`{_esc(c)}`' if c != '`' else '`` ` ``' for c in chars)}

  The {len(d['rare_chars'])} rarer characters of the training text ({' '.join(f'`{_esc(c)}`' for c in d['rare_chars'])})
  become `<unk>`: {d['unk_tokens']['train']} tokens in training, {d['unk_tokens']['val']} in validation and
  {d['unk_tokens']['test']} in test.

## Architecture
Embedding {V} -> {cfg['emb']}, nn.{cell} ({Lr} layer{'s' if Lr > 1 else ''}, hidden {H}), linear {H} -> {V}; dropout
{cfg['dropout']} on the embedding and on the {cell}'s output while training. **{m['params']:,} parameters**, TorchScript
file {C.file_kb(path)}.

## Serving contract
- `forward(tokens: int64 [B, 1], state: float32 [B, {S}]) -> (logits: float32 [B, {V}], state: float32 [B, {S}])`:
  one recurrent step. A zero state row is the initial state; {step_text}. The server feeds `<s>`, then the prompt one
  character per step, then each drawn token, keeping each sequence's state row between steps; the logits are raw
  (before softmax and temperature).
- The step is written as explicit matrix products (`training/fortunes_lm.py`, `{'LSTMStep' if cell == 'LSTM' else 'GRUStep'}`)
  with the trained nn.{cell}'s weights, so it scripts and exports as it is. Checked before saving: fed one token at a
  time, it gives the logits nn.{cell} gives over whole sequences within **{m['step_vs_rnn_max_abs_diff']:.1e}**
  (largest absolute difference over 8 validation fortunes, the 3 longest among them); the TorchScript file matches
  the eager step within {m['torchscript_vs_eager_max_abs_diff']:.1e}. `model.pt2` (AOTInductor, batch 1..1024) is
  made from `model.pt` by `training/export_pt2.py`, which checks it against `model.pt`.
- `config.toml`: `[language_model]` with the vocabulary above, `bos = "<s>"`, `eos = "</s>"`, {unknown};
  `state_size = {S}`, `max_prompt_chars = 4096`, `max_tokens = 1024`, `default_max_tokens = 200`,
  `max_sequences = 64`, `max_n = 8`. Batching: up to 64 steps per forward, no queue delay.
- Golden file: `tests/data/golden/{name}.json`, {GOLDEN_BATCH} random tokens and random state rows.

## Training
Truncated backpropagation through time over the training fortunes concatenated (`<s>` text `</s>` `<s>` ...) in a
fresh random order each epoch, cut into {cfg['batch']} parallel streams read in windows of {cfg['bptt']} steps, the
state carried (detached) from one window to the next; a target `<s>` (after `</s>`) is not scored.
{train_impl} Cross-entropy,
AdamW (lr {cfg['lr']}, betas 0.9/0.99, weight decay {cfg['weight_decay']}), linear warm-up over the first 2% of steps
then cosine decay to 0, gradient clipping 1.0, {cfg['epochs']} epochs; the weights of the epoch with the best
validation bpc are kept (**epoch {m['selected_epoch']}**). Seed {C.SEED}; {C.env_line()}. Training time
**{C.fmt_secs(m['train_seconds'])}** (whole script {C.fmt_secs(m['total_seconds'])}); 1-minute load average
{m['load_average'][0]:.1f} when training began and {m['load_average'][1]:.1f} when it ended (2 cores, shared with
other jobs).

| epoch | train bpc (dropout on, carried state) | validation bpc | elapsed |
|---|---|---|---|
{hist}

## Held-out results
Unit: **bits per character = bits per predicted token**, every token after `<s>` counted, `</s>` included
(`-log2 P(token | the fortune so far)`, averaged over all predicted tokens of all fortunes); the LM reads each fortune
from a zero state, as served.

Baseline: character n-gram models of orders 1 to {MAX_ORDER} over the same token sequences (the context padded on the left
with `<s>`), fitted on the training fortunes only (`training/ngram.py`, numpy): **interpolated modified Kneser-Ney**
(Chen & Goodman): three discounts D1, D2, D3+ per order, from that order's count-of-counts by Chen & Goodman's
closed-form estimates (not tuned on validation), raw counts at the highest order and continuation counts below, down
to a uniform distribution over the {V - 1} predictable tokens.

| n-gram order | validation bpc | test bpc |
|---|---|---|
{ng_rows}

The best n-gram on test is order {ng['best_order']} ({ng['best_test_bpc']:.4f} bpc; validation also picks order
{ng['best_order_by_val']}).

| model | validation bpc | test bpc | test / best n-gram |
|---|---|---|---|
| {ng['best_order']}-gram, interpolated modified Kneser-Ney | {ng['val_bpc'][ng['best_order']]:.4f} | {ng['best_test_bpc']:.4f} | 1 |
| **{name}** | **{m['val_bpc']:.4f}** | **{m['test_bpc']:.4f}** | **{m['ratio_to_best_ngram']:.4f}** |

Bar: test bpc <= {BAR} x the best n-gram's = {m['bar_bpc']:.4f} -> **{'met' if m['bar_met'] else 'NOT met'}**.

Text the test fortunes share with the training text: {sh['char_share']:.1%} of their characters lie inside a
40-character string that also occurs in the training text; {sh['fortunes']} of the {d['split_fortunes']['test']} test
fortunes have such a string (mostly attribution lines such as `-- Douglas Coupland, "Generation X: Tales for an
Accelerated Culture"`), and in {sh['fortunes_over_90pct']} of them it covers more than 90% of the fortune (a
near-duplicate that is not identical). An n-gram model keeps every context of its order from the training text.

## Samples
Made with the saved TorchScript step exactly as the server decodes: `<s>`, the prompt, then tokens drawn among the
drawable ones (the characters and `</s>`), greedy or from softmax(logits / T) with a seeded torch generator (the
server's own random streams differ, so the same seed gives other text there). Control characters other than newline
and tab are shown escaped.

{samples}
{compare}
## Reproduce
`make models` (or `.venv/bin/python training/fortunes_lm.py` from the repository root: both models, the LSTM first;
`... fortunes_lm.py {cfg['cell']}` for this one), then `.venv/bin/python training/export_pt2.py {name}` for `model.pt2`.
"""


def rewrite_cards(keys: list[str]) -> None:
    """Rewrites the model cards (and the data fields of metrics.json) from the measured numbers in metrics.json,
    without training: for a change of the card's text."""
    data = Data()
    for key in keys:
        name = MODELS[key]["name"]
        m = json.loads((C.MODELS / name / "metrics.json").read_text())
        assert m["data"]["corpus_sha256"] == data.info["sha256"], "the corpus changed since training"
        for part in ("val_bpc", "test_bpc"):
            m["ngram"][part] = {int(k): v for k, v in m["ngram"][part].items()}
        m["data"]["test_shared_40grams"] = data.shared_40()
        m["data"].pop("test_chars_in_shared_40grams", None)
        cfg = {**MODELS[key], **m["architecture"], **m["training"]}
        C.write_metrics(name, m)
        C.write_card(name, card(cfg, data, m, C.model_path(name)))
        C.log(name, "card rewritten from metrics.json")


def main_lstm() -> dict:
    return run("lstm")


def main_gru() -> dict:
    return run("gru")


def main() -> None:
    """Trains the models named on the command line (lstm, gru; default both, the LSTM first); a model that misses
    its bar does not stop the next one, and the script exits non-zero at the end."""
    args = sys.argv[1:]
    cards_only = "--cards" in args
    keys = [a for a in args if a != "--cards"] or ["lstm", "gru"]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {list(MODELS)}")
    if cards_only:
        return rewrite_cards(keys)
    data = Data()
    failed = []
    for k in keys:
        try:
            run(k, data)
        except SystemExit as e:
            failed.append(str(e))
    if failed:
        raise SystemExit("; ".join(failed))


if __name__ == "__main__":
    main()
