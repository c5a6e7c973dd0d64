"""Border-weight maps: brute-force reference (one full-image EDT per instance) vs seg.transforms.weights.

Runs both on the 30 ISBI 2012 training slices (instances = 4-connected components of the interior),
in one process, and reports the times, the speed-up and the max abs difference of the maps.

    .venv/bin/python bench/weights.py
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage
from skimage.measure import label

from seg.config import section_defaults
from seg.settings.plan import FALLBACK
from seg.io import write_json
from seg.transforms.weights import border_weight_map, class_weights

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT.parent / "shared" / "data" / "isbi2012" / "train-labels.tif"
# the schema's w0 and the built-in configs' sigma (the schema leaves sigma to the plan)
W0, SIGMA = section_defaults("weights")["w0"], FALLBACK["weights.sigma"]


def reference(instances: np.ndarray, semantic: np.ndarray, wc: np.ndarray) -> np.ndarray:
    """The straightforward map: one full EDT per instance, two smallest distances per pixel."""
    ids = [k for k in np.unique(instances) if k != 0]
    border = np.zeros(instances.shape)
    if len(ids) >= 2:
        dist = np.stack([ndimage.distance_transform_edt(instances != k) for k in ids])
        dist.partition(1, axis=0)
        border = W0 * np.exp(-((dist[0] + dist[1]) ** 2) / (2 * SIGMA**2))
    return (wc[semantic] + border * (semantic == 0)).astype(np.float32)


def main() -> int:
    labels = tifffile.imread(LABELS)
    sem = [(lab == 255).astype(np.uint8) for lab in labels]
    inst = [label(s == 1, connectivity=1).astype(np.int32) for s in sem]
    wc = class_weights(sem[:20], 2)  # the default training split, slices 0-19
    n_inst = [int(i.max()) for i in inst]

    # Interleaved slice by slice, so that load from other processes on a shared machine hits both
    # alike; wall clock and process CPU time (both single-threaded) are recorded.
    t_fast = t_ref = c_fast = c_ref = 0.0
    err = 0.0
    for i, s in zip(inst, sem):
        t0, c0 = time.perf_counter(), time.process_time()
        fast = border_weight_map(i, w0=W0, sigma=SIGMA, class_weights=wc, semantic=s)
        t1, c1 = time.perf_counter(), time.process_time()
        ref = reference(i, s, wc)
        t2, c2 = time.perf_counter(), time.process_time()
        t_fast, c_fast = t_fast + t1 - t0, c_fast + c1 - c0
        t_ref, c_ref = t_ref + t2 - t1, c_ref + c2 - c1
        err = max(err, float(np.abs(fast.astype(np.float64) - ref).max()))

    speedup = t_ref / t_fast
    rows = [("reference (full EDT per instance)", t_ref, c_ref), ("seg.transforms.weights (cropped EDTs)", t_fast, c_fast)]
    print(f"ISBI 2012 training labels: {len(labels)} slices {labels.shape[1]}x{labels.shape[2]}, "
          f"{min(n_inst)}-{max(n_inst)} instances per slice; w0={W0}, sigma={SIGMA} px, w_c={wc.round(4).tolist()}")
    print(f"{'method':<38}{'total s':>10}{'ms/slice':>10}{'CPU s':>10}")
    for name, t, c in rows:
        print(f"{name:<38}{t:>10.2f}{1000 * t / len(labels):>10.1f}{c:>10.2f}")
    print(f"speed-up {speedup:.1f}x wall clock ({c_ref / c_fast:.1f}x CPU time), "
          f"max abs difference {err:.3g} (limit {1e-3 * W0:g})")
    result = {"slices": len(labels), "instances_per_slice": [min(n_inst), max(n_inst)], "w0": W0, "sigma": SIGMA,
              "reference_s": t_ref, "fast_s": t_fast, "reference_cpu_s": c_ref, "fast_cpu_s": c_fast,
              "speedup": speedup, "speedup_cpu": c_ref / c_fast, "max_abs_err": err,
              "limit": 1e-3 * W0, "python": sys.version.split()[0], "machine": platform.machine(),
              "cpu": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = ROOT / "bench" / "results" / "weights.json"
    write_json(out, result)
    print(f"RESULT weights speedup={speedup:.1f} max_abs_err={err:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
