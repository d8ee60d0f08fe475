"""Trains the default models in order and prints the total time.

digits-cnn comes first: the digits-cgan evaluation classifies generated digits with it, and the
digits-detector baseline (connected components + digits-cnn) uses it too.
Run from the repository root: .venv/bin/python training/train_all.py  (or `make models`)
"""
from __future__ import annotations

import os

# Before torch is imported: idle OpenMP threads sleep instead of spinning. On a 2-core machine shared with
# other work (a cargo build), spinning threads made training 5-10x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
import cancer_ae  # noqa: E402
import co2_lstm  # noqa: E402
import digits_cgan  # noqa: E402
import digits_cnn  # noqa: E402
import digits_denoiser  # noqa: E402
import digits_detector  # noqa: E402
import elnino_gru  # noqa: E402
import export_pt2  # noqa: E402
import fortunes_lm  # noqa: E402

STEPS = [("digits-cnn", digits_cnn.main), ("co2-lstm", co2_lstm.main),
         ("cancer-ae", cancer_ae.main), ("digits-cgan", digits_cgan.main),
         ("digits-detector", digits_detector.main), ("digits-denoiser", digits_denoiser.main),
         ("elnino-gru", elnino_gru.main), ("fortunes-lstm", fortunes_lm.main_lstm),
         ("fortunes-gru", fortunes_lm.main_gru)]  # the GRU's card compares it with the LSTM trained just before


def main() -> None:
    t0 = time.time()
    times = []
    for i, (name, fn) in enumerate(STEPS, 1):
        print(f"=== [{i}/{len(STEPS)}] {name} (elapsed so far {C.fmt_secs(time.time() - t0)})", flush=True)
        t = time.time()
        fn()  # each script seeds itself (C.setup) and exits non-zero when its bar is missed
        times.append((name, time.time() - t))
    print(f"=== all {len(STEPS)} models trained; exporting the .pt2 packages (training/export_pt2.py)", flush=True)
    t = time.time()
    sys.argv = sys.argv[:1]  # every model with an export spec
    export_pt2.main()
    times.append((f"model.pt2 x{len(export_pt2.SPECS)}", time.time() - t))
    for name, secs in times:
        print(f"    {name:<15} {C.fmt_secs(secs)}", flush=True)
    print(f"=== total wall time {C.fmt_secs(time.time() - t0)}", flush=True)


if __name__ == "__main__":
    main()
