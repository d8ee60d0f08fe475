"""Packaging PyTorch modules for dlserve with torch.export + AOTInductor: `package` and `check`.

    import sys; sys.path.insert(0, "training")      # from the repository root
    from pt2 import package, check
    package({"model": (module, example_inputs)}, "models/my-model/1/model.pt2")
    check("models/my-model/1/model.pt2", {"model": (module, example_inputs)})

`package` exports each module with a dynamic batch dimension (dimension 0 of every input, 1..max_batch) and
compiles them into one .pt2 file, one AOTInductor model per entry: "model" is what every endpoint runs, and
an entry named like a config's `[embedding] method` (for instance "encode") is what POST /embed runs. It
compiles the way dlserve expects:

- `-march=x86-64-v3` instead of AOTInductor's `-march=native`, with AVX2 vector kernels (`cpp.simdlen = 256`):
  the package then runs on every x86-64 host with AVX2, FMA and BMI2 (Intel Haswell, AMD Zen and later),
  not only on one like the machine that compiled it. `dlserve.isa` in the metadata says so; the server checks
  it and AOTInductor's `AOTI_CPU_ISA` against the host before loading anything (`baseline=False` keeps
  -march=native: faster on the compiling machine, refused by hosts that lack its instructions).
- `cpp.dynamic_threads`: the kernels' OpenMP loops take the calling thread's thread count at run time, so
  the model's `batching.intra_op_threads` applies to them (by default the count is fixed when compiling).
- `dlserve.batch_min` / `dlserve.batch_max` in the metadata: the exported batch range, which the server
  reads to refuse a `max_batch_size` beyond it.

Only dimension 0 is dynamic. A recurrent layer's time dimension cannot be (torch.export specialises it), so a
forecaster package serves one context length: set min_context = max_context to it, or ship TorchScript.

`check` loads the package back and compares it with the eager (or TorchScript) callables on random inputs at
several batch sizes; it raises if any output differs by more than `tolerance`.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import torch


def _baseline_cflags() -> None:
    import torch._inductor.cpp_builder as cb
    if getattr(cb._get_optimization_cflags, "_dlserve_baseline", False):
        return
    original = cb._get_optimization_cflags

    def baseline(*args, **kwargs):
        cflags, ldflags = original(*args, **kwargs)
        return ["march=x86-64-v3" if f == "march=native" else f for f in cflags], ldflags

    baseline._dlserve_baseline = True
    cb._get_optimization_cflags = baseline


def package(modules: dict, path, max_batch: int = 1024, baseline: bool = True, source: str = "") -> dict:
    """Exports and compiles {name: (module, example_inputs)} into the .pt2 file at `path` (replaced only once
    the new file is complete). Returns {"batch_min", "batch_max", "seconds"}."""
    from torch._inductor.package import package_aoti
    if baseline:
        _baseline_cflags()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    files, ranges = {}, set()
    for name, (module, example) in modules.items():
        module = module.eval()
        batch = torch.export.Dim("batch", min=1, max=max_batch)
        with torch.no_grad(), warnings.catch_warnings():
            # raised inside torch.export's own pickling in torch 2.11, about its internals, not the model
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            ep = torch.export.export(module, tuple(example), dynamic_shapes=tuple({0: batch} for _ in example))
        ranges |= {(int(r.lower), int(r.upper)) for r in ep.range_constraints.values()}
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        metadata = {"dlserve.batch_min": str(lo), "dlserve.batch_max": str(hi)}
        if baseline:
            metadata["dlserve.isa"] = "x86-64-v3"
        if source:
            metadata["dlserve.source"] = source
        options = {"aot_inductor.package": True, "cpp.dynamic_threads": True, "aot_inductor.metadata": metadata}
        if baseline:
            options["cpp.simdlen"] = 256
        with torch.no_grad():
            files[name] = torch._inductor.aot_compile(ep.module(), tuple(example), options=options)
    if len(ranges) != 1:
        raise ValueError(f"the exported models have different batch ranges {ranges}")
    with tempfile.TemporaryDirectory(dir=path.parent) as d:
        tmp = Path(d) / "model.pt2"  # the archive's top folder is named after the file
        package_aoti(str(tmp), files)
        tmp.replace(path)
    lo, hi = ranges.pop()
    return {"batch_min": lo, "batch_max": hi, "seconds": time.time() - t0}


def check(path, callables: dict, batches=(1, 3, 17), tolerance: float = 1e-4, seed: int = 0) -> float:
    """Runs each packaged model and {name: (callable, example_inputs)} on the same random inputs (float inputs
    uniform in [0, 1), int64 inputs in 0..9) at each batch size; returns the largest absolute difference and
    raises ValueError past `tolerance`."""
    from torch._inductor.package import load_package
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for name, (fn, example) in callables.items():
        pkg = load_package(str(path), name)
        for b in batches:
            args = [torch.randint(0, 10, (b, *e.shape[1:]), generator=g) if e.dtype == torch.long
                    else torch.rand((b, *e.shape[1:]), generator=g) for e in example]
            with torch.no_grad():
                want, got = fn(*args), pkg(*args)
            want = want if isinstance(want, (tuple, list)) else [want]
            got = got if isinstance(got, (tuple, list)) else [got]
            for w, o in zip(want, got):
                d = (w.float() - o.float()).abs().max().item()
                worst = max(worst, d)
                if not d <= tolerance:
                    raise ValueError(f"{path}: {name} at batch {b} differs by {d:.3e} (> {tolerance})")
    return worst
