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

By default only dimension 0 is dynamic. An entry may declare more as a third element, {input index: {dimension:
torch.export.Dim}}, for instance a forecaster's context length:

    time = torch.export.Dim("time", min=24, max=120)
    package({"model": (forecaster, (torch.zeros(2, 120, 1),), {0: {1: time}})}, path)

Their ranges go into the metadata too (`dlserve.input<i>.dim<d>_min` / `_max`), and the kernels are generated for
any size in them: the wrapper's `check_input_<i>` tests those sizes against the range instead of one value.

A recurrent layer and a dynamic time dimension: torch.export (torch 2.11) turns oneDNN off while it traces (so that
the graph does not depend on the backend), and without oneDNN nn.LSTM / nn.GRU decompose into one step per time step,
which fixes T ("Constraints violated (time)"). Two ways around it, both with the module's own parameters:

- nn.LSTM: `package(..., onednn=True)` exports with oneDNN on. The LSTM then stays one aten.lstm op with T dynamic
  (its oneDNN form, mkldnn_rnn_layer, takes any T), and AOTInductor compiles it to a call of oneDNN's LSTM kernel
  (`aoti_torch_cpu_mkldnn_rnn_layer`, in libtorch_cpu): the kernel TorchScript runs on CPU (co2-lstm: within 2e-7
  of it, and faster). CPU packages only. The eager module exports as it is.
- nn.GRU (PyTorch has no oneDNN GRU), or any device: `last_step_rnns(module)` makes the module's nn.LSTM and nn.GRU
  layers run their recurrence as one `torch._higher_order_ops.scan` over T instead, which AOTInductor compiles to
  a loop whose length is the input's T (per step: one matrix product for the hidden state, one fused kernel for the
  gates). The parameters are unchanged (same names, same state_dict), but such a layer returns only the last time
  step as its output sequence ([B, 1, H] with batch_first), because AOTInductor cannot yet compile a scan that
  stacks a per-step output whose shape has the batch size in it ("KeyError: s77" when decomposing the scan). That
  is what a forecaster reading `out[:, -1]` needs; `check` catches a module that reads more of it. For an LSTM this
  loop was 2.5-3.5x slower than oneDNN's kernel on one thread; for a GRU faster than TorchScript's own loop.

Serve only T within the exported range: AOTInductor tests it in `check_input_<i>` only when the environment variable
AOTI_RUNTIME_CHECK_INPUTS is set, and past the maximum a scan package fails an assertion ("Expected u0 <= 119 but
received 120").

`check` loads the package back and compares it with the eager (or TorchScript) callables on random inputs at
several batch sizes, and optionally several item shapes; it raises if any output differs by more than `tolerance`.
"""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        # raised inside torch.export's own pickling in torch 2.11 (also when compiling a scan), about its
        # internals, not the model
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        # nn.LSTM / nn.GRU re-point their _flat_weights list at the parameters while being exported; the
        # exported program reads the parameters themselves
        warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights\[0\]", category=UserWarning)
        yield


@contextlib.contextmanager
def _export_with_onednn():
    """torch.export's own switch (torch 2.11: torch.export._trace._ignore_backend_decomps turns oneDNN, NNPACK and
    cuDNN off while tracing), with oneDNN left on."""
    import torch.export._trace as trace
    original = getattr(trace, "_ignore_backend_decomps", None)
    if original is None:
        raise RuntimeError(f"onednn=True: torch {torch.__version__} has no torch.export._trace._ignore_backend_decomps")

    @contextlib.contextmanager
    def keep_onednn():
        flags = (torch.backends.mkldnn.set_flags(True), torch.backends.nnpack.set_flags(False),
                 torch.backends.cudnn.set_flags(False))
        try:
            yield
        finally:
            torch.backends.mkldnn.set_flags(*flags[0])
            torch.backends.nnpack.set_flags(*flags[1])
            torch.backends.cudnn.set_flags(*flags[2])

    trace._ignore_backend_decomps = keep_onednn
    try:
        yield
    finally:
        trace._ignore_backend_decomps = original


def package(modules: dict, path, max_batch: int = 1024, baseline: bool = True, source: str = "",
            onednn: bool = False) -> dict:
    """Exports and compiles {name: (module, example_inputs)} into the .pt2 file at `path` (replaced only once
    the new file is complete). An entry may have a third element, {input index: {dimension: torch.export.Dim}}:
    dynamic dimensions besides the batch (dimension 0 of every input, always dynamic, 1..max_batch).
    `onednn`: export with oneDNN on (see the module's docstring: an nn.LSTM with a dynamic T).
    Returns {"batch_min", "batch_max", "seconds"}, and "dims": {(input, dimension): (min, max)} of the others."""
    from torch._inductor.package import package_aoti
    if baseline:
        _baseline_cflags()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    files, ranges, dims = {}, set(), {}
    for name, (module, example, *extra) in modules.items():
        module = module.eval()
        extra = extra[0] if extra else {}
        batch = torch.export.Dim("batch", min=1, max=max_batch)
        shapes = tuple({0: batch, **extra.get(i, {})} for i in range(len(example)))
        with torch.no_grad(), _quiet(), (_export_with_onednn() if onednn else contextlib.nullcontext()):
            ep = torch.export.export(module, tuple(example), dynamic_shapes=shapes)
        sizes = _input_ranges(ep)
        ranges |= {sizes[(i, 0)] for i in range(len(example))}
        own = {k: v for k, v in sizes.items() if k[1] != 0 and k[1] in extra.get(k[0], {})}
        dims.update(own)
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        metadata = {"dlserve.batch_min": str(lo), "dlserve.batch_max": str(hi)}
        for (i, d), (a, b) in sorted(own.items()):
            metadata[f"dlserve.input{i}.dim{d}_min"], metadata[f"dlserve.input{i}.dim{d}_max"] = str(a), str(b)
        if baseline:
            metadata["dlserve.isa"] = "x86-64-v3"
        if source:
            metadata["dlserve.source"] = source
        options = {"aot_inductor.package": True, "cpp.dynamic_threads": True, "aot_inductor.metadata": metadata}
        if baseline:
            options["cpp.simdlen"] = 256
        with torch.no_grad(), _quiet():
            files[name] = torch._inductor.aot_compile(ep.module(), tuple(example), options=options)
    if len(ranges) != 1:
        raise ValueError(f"the exported models have different batch ranges {ranges}")
    with tempfile.TemporaryDirectory(dir=path.parent) as d:
        tmp = Path(d) / "model.pt2"  # the archive's top folder is named after the file
        package_aoti(str(tmp), files)
        tmp.replace(path)
    lo, hi = ranges.pop()
    return {"batch_min": lo, "batch_max": hi, "seconds": time.time() - t0, "dims": dims}


def _input_ranges(ep) -> dict:
    """{(input index, dimension): (min, max)} of the exported program's inputs; a static size n gives (n, n)."""
    vals = {n.name: n.meta["val"] for n in ep.graph.nodes if n.op == "placeholder"}
    out = {}
    for i, name in enumerate(ep.graph_signature.user_inputs):
        for d, size in enumerate(vals[name].shape):
            if isinstance(size, torch.SymInt):
                r = ep.range_constraints[size.node.expr]
                out[(i, d)] = (int(r.lower), int(r.upper))
            else:
                out[(i, d)] = (int(size), int(size))
    return out


def check(path, callables: dict, batches=(1, 3, 17), tolerance: float = 1e-4, seed: int = 0, shapes=None) -> float:
    """Runs each packaged model and {name: (callable, example_inputs)} on the same random inputs (float inputs
    uniform in [0, 1), int64 inputs in 0..9) at each batch size; returns the largest absolute difference and
    raises ValueError past `tolerance`. `shapes`, a list of alternatives, each a tuple with one item shape (the
    shape without the batch dimension) per input, checks each of them at each batch size instead of the
    example's, for instance [((t, 1),) for t in (24, 37, 60, 120)] for a dynamic time dimension; a dict
    {name: list or None} gives them per entry."""
    from torch._inductor.package import load_package
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for name, (fn, example, *_) in callables.items():
        pkg = load_package(str(path), name)
        alts = shapes.get(name) if isinstance(shapes, dict) else shapes
        items = [tuple(e.shape[1:] for e in example)] if alts is None else [tuple(map(tuple, s)) for s in alts]
        for b in batches:
            for item in items:
                args = [torch.randint(0, 10, (b, *s), generator=g) if e.dtype == torch.long
                        else torch.rand((b, *s), generator=g) for e, s in zip(example, item)]
                with torch.no_grad():
                    want, got = fn(*args), pkg(*args)
                want = want if isinstance(want, (tuple, list)) else [want]
                got = got if isinstance(got, (tuple, list)) else [got]
                if len(want) != len(got):
                    raise ValueError(f"{path}: {name} returns {len(got)} outputs, the reference {len(want)}")
                for w, o in zip(want, got):
                    if tuple(w.shape) != tuple(o.shape):
                        raise ValueError(f"{path}: {name} at batch {b}, items {list(item)}: output shape "
                                         f"{tuple(o.shape)}, the reference's {tuple(w.shape)}")
                    d = (w.float() - o.float()).abs().max().item()
                    worst = max(worst, d)
                    if not d <= tolerance:
                        where = f"batch {b}" if alts is None else f"batch {b}, items {list(item)}"
                        raise ValueError(f"{path}: {name} at {where} differs by {d:.3e} (> {tolerance})")
    return worst


# ----------------------------------------------------------------------------- recurrent layers, T dynamic

class _LastStep:
    """Mixed into nn.LSTM / nn.GRU by `last_step_rnns`: forward runs the recurrence as one scan over time (every
    layer inside one step, so that nothing but the last states is carried) and returns (out, h_n) / (out, (h_n,
    c_n)) like the layer, except that `out` holds only the last time step. The gate arithmetic is PyTorch's CPU
    one: the input projection of the first layer for all steps at once, then per step gates = x_proj + h W_hh^T
    + b_hh (LSTM: i, f, g, o; GRU: r, z, n with n = tanh(x_n + r * (h W_hn^T + b_hn)))."""

    def forward(self, x, hx=None):
        from torch._higher_order_ops.scan import scan
        import torch.nn.functional as F
        if self.bidirectional or getattr(self, "proj_size", 0) or x.dim() != 3:
            raise ValueError("last_step_rnns: a one-direction layer without projection, on batched (3-D) input")
        if self.training and self.dropout:
            raise ValueError("last_step_rnns: inference only (eval())")
        lstm = isinstance(self, torch.nn.LSTM)
        batch_first, layers, hidden = self.batch_first, self.num_layers, self.hidden_size
        b = x.shape[0] if batch_first else x.shape[1]
        w = [(getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
              getattr(self, f"bias_ih_l{k}", None), getattr(self, f"bias_hh_l{k}", None)) for k in range(layers)]
        if hx is None:
            zeros = x.new_zeros(layers, b, hidden)
            hx = (zeros, zeros.clone()) if lstm else zeros
        h0 = hx[0] if lstm else hx
        init = [h0[k].clone() for k in range(layers)] + ([hx[1][k].clone() for k in range(layers)] if lstm else [])
        # A scan carrying one tensor (a 1-layer GRU) fails in Inductor (torch 2.11: "<built-in function getitem>
        # is not an OpOverload", its while_loop's one result is not a list): a step counter goes along then.
        count = len(init) == 1
        init += [x.new_zeros(1)] if count else []
        xs = F.linear(x, w[0][0], w[0][2])  # the first layer's input projection, every step at once

        def cell(k, xp, h, c):
            gh = F.linear(h, w[k][1], w[k][3])
            if lstm:
                i, f, g, o = (xp + gh).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                return torch.sigmoid(o) * torch.tanh(c), c
            xr, xz, xn = xp.chunk(3, 1)
            hr, hz, hn = gh.chunk(3, 1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            return n + z * (h - n), None

        def step(carry, xp):
            hs, cs = [], []
            for k in range(layers):
                if k:
                    xp = F.linear(hs[-1], w[k][0], w[k][2])
                h, c = cell(k, xp, carry[k], carry[layers + k] if lstm else None)
                hs.append(h)
                cs += [c] if lstm else []
            return hs + cs + ([carry[-1] + 1] if count else []), []

        last, _ = scan(step, init, xs, dim=1 if batch_first else 0)
        h_n = torch.stack(last[:layers])
        out = h_n[-1].unsqueeze(1 if batch_first else 0)
        return out, ((h_n, torch.stack(last[layers:2 * layers])) if lstm else h_n)


class _LastStepLSTM(_LastStep, torch.nn.LSTM):
    pass


class _LastStepGRU(_LastStep, torch.nn.GRU):
    pass


def last_step_rnns(module: torch.nn.Module) -> torch.nn.Module:
    """Makes every nn.LSTM and nn.GRU in `module` (in place; returned) export with a dynamic time dimension: see
    _LastStep. Parameter names and the state_dict do not change; their output sequence becomes the last step."""
    for m in module.modules():
        if type(m) is torch.nn.LSTM:
            m.__class__ = _LastStepLSTM
        elif type(m) is torch.nn.GRU:
            m.__class__ = _LastStepGRU
    return module
