"""Exports shipped models as torch.export + AOTInductor packages (models/<name>/1/model.pt2).

    .venv/bin/python training/export_pt2.py [name ...]      (default: every model listed in SPECS)

Each package is compiled from the same weights as the TorchScript file beside it: the eager module of
the model's training script is rebuilt and given `torch.jit.load(model.pt).state_dict()` (strictly:
every key must match), exported with a dynamic batch dimension (1..MAX_BATCH) and compiled with
AOTInductor. Before writing, the package is loaded back and compared with the TorchScript file at
batch sizes 1, 3, 17 and 64 (the largest absolute difference must stay within TOLERANCE).

The two forecasters also have their context length T dynamic (24..120, their min_context..max_context), and are
checked at T = 24, 37, 60 and 120 at each of those batch sizes: co2-lstm's nn.LSTM is exported with oneDNN on and
runs oneDNN's LSTM kernel, elnino-gru's nn.GRU runs as a scan over T (pt2.last_step_rnns); see training/pt2.py.
Their TorchScript `setup_method` (packing the weights for cuDNN on CUDA) has no counterpart in a CPU package.

How the packages are compiled, and why: see training/pt2.py (baseline -march, dynamic OpenMP threads,
the batch range in the metadata).

Compiling took 10 to 54 seconds per package on this 2-core machine (digits-cnn 40-47 s, cancer-ae 20-23 s with
its two models, digits-cgan 10 s, digits-denoiser 22 s, digits-detector 13 s; co2-lstm 38-54 s, elnino-gru 37-39 s
on its own and 8-11 s after co2-lstm in the same run, measured with a fresh Inductor cache while other builds
shared the machine; fortunes-lstm 33-38 s and fortunes-gru 7-9 s after it; `make models` runs this script last).

The two language models (training/fortunes_lm.py) export their one-step module as it is: tokens [B, 1] and state
[B, S], the batch dynamic in both, checked with random token ids and state rows.
"""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
import pt2  # noqa: E402

MAX_BATCH = 1024
TOLERANCE = 1e-4
CHECK_BATCHES = (1, 3, 17, 64)


def _cnn():
    from digits_cnn import DigitsCNN
    return {"model": (DigitsCNN, (torch.zeros(2, 1, 28, 28),))}


def _cgan():
    from digits_cgan import Generator
    # The plain generator: ServedGenerator's blocks of 8 rows are a loop whose length depends on the batch,
    # which torch.export would specialise.
    return {"model": (Generator, (torch.zeros(2, 64), torch.zeros(2, dtype=torch.long)))}


def _cancer():
    import cancer_ae
    factory, ex, _ = cancer_ae.export_spec()

    class Encode(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = factory()

        def forward(self, x):
            return self.m.encode(x)

        def load_state_dict(self, sd, strict=True):
            return self.m.load_state_dict(sd, strict=strict)

    return {"model": (factory, ex), "encode": (Encode, ex)}


def _denoiser():
    import digits_denoiser
    spec = digits_denoiser.export_spec()
    return {"model": spec["forward"][:2], "encode": spec["encode"][:2]}


def _detector():
    import digits_detector
    factory, ex, _ = digits_detector.export_spec()
    return {"model": (factory, ex)}


def _forecaster(script: str, cls: str, scan: bool):
    """A recurrent forecaster with its context length T dynamic (MIN_T..MAX_T of its training script), exported
    from T = MAX_T and checked at T = MIN_T, 37, 60 and MAX_T. An nn.LSTM exports as it is, with oneDNN on
    (OPTIONS); an nn.GRU (`scan`) runs its recurrence as one scan over T (pt2.last_step_rnns; same parameters)."""
    def spec():
        import importlib
        mod = importlib.import_module(script)
        time = torch.export.Dim("time", min=mod.MIN_T, max=mod.MAX_T)
        contexts = [((t, 1),) for t in (mod.MIN_T, 37, 60, mod.MAX_T)]
        factory = (lambda: pt2.last_step_rnns(getattr(mod, cls)())) if scan else getattr(mod, cls)
        return {"model": (factory, (torch.zeros(2, mod.MAX_T, 1),), {0: {1: time}}, contexts)}
    return spec


def _language_model(key: str):
    """A character language model's served step (training/fortunes_lm.py): tokens [B, 1] and state [B, S], both
    with the batch dynamic; V and S from the model's config.toml. The step is explicit matrix products, so it
    exports as it is."""
    def spec():
        import fortunes_lm
        factory, example = fortunes_lm.export_spec(key)
        return {"model": (factory, example)}
    return spec


SPECS = {
    "digits-cnn": _cnn,
    "digits-cgan": _cgan,
    "cancer-ae": _cancer,
    "digits-denoiser": _denoiser,
    "digits-detector": _detector,
    "co2-lstm": _forecaster("co2_lstm", "CO2LSTM", scan=False),
    "elnino-gru": _forecaster("elnino_gru", "ElNinoGRU", scan=True),
    "fortunes-lstm": _language_model("lstm"),
    "fortunes-gru": _language_model("gru"),
}
# pt2.package's options by model
OPTIONS = {"co2-lstm": {"onednn": True}}


def export_package(name: str) -> Path:
    """models/<name>/1/model.pt2 from models/<name>/1/model.pt's weights. A spec entry is (factory, example
    inputs), optionally followed by pt2.package's further dynamic dimensions and pt2.check's item shapes."""
    ts = torch.jit.load(str(C.model_path(name)), map_location="cpu").eval()
    modules, shapes = {}, {}
    for model, (factory, example, *rest) in SPECS[name]().items():
        m = factory()
        m.load_state_dict(ts.state_dict(), strict=True)
        modules[model] = (m.eval(), example, *rest[:1])
        shapes[model] = rest[1] if len(rest) > 1 else None
    out = C.model_path(name).with_suffix(".pt2")
    info = pt2.package(modules, out, max_batch=MAX_BATCH, source="training/export_pt2.py", **OPTIONS.get(name, {}))
    worst = pt2.check(out, {m: (ts.forward if m == "model" else getattr(ts, m), ex) for m, (_, ex, *_) in modules.items()},
                      batches=CHECK_BATCHES, tolerance=TOLERANCE, seed=C.SEED, shapes=shapes)
    dims = "".join(f"; input {i} dim {d} {a}..{b}" for (i, d), (a, b) in sorted(info["dims"].items()))
    C.log(name, f"model.pt2 written ({out.stat().st_size / 1e6:.1f} MB; batch {info['batch_min']}..{info['batch_max']}"
                f"{dims}; compiled in {info['seconds']:.0f}s; largest difference from model.pt {worst:.2e})")
    return out


def main() -> None:
    C.setup()
    names = sys.argv[1:] or list(SPECS)
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise SystemExit(f"no export spec for {unknown}; known: {list(SPECS)}")
    for n in names:
        cfg = tomllib.loads((C.MODELS / n / "config.toml").read_text())
        C.log(n, f"exporting ({cfg['kind']})")
        export_package(n)


if __name__ == "__main__":
    main()
