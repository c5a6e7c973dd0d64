"""Augmentation throughput on one 512x512 sample (image float32 + labels uint8 + weights float32).

Compared in one run, each producing the same three outputs with one random deformation:
  * ours:   seg.transforms.augment.Augmenter (one elasticdeform call for all arrays, 3x3 grid, sigma 10 px,
            cubic/nearest/linear, plus flips/rot90/intensity), full 512x512 output;
  * ours, 256 crop: the training path (crop= evaluates only a 256x256 output patch of the slice);
  * naive:  elasticdeform.deform_grid called once per array (three calls, same grid and orders);
  * MONAI:  Rand2DElasticd (control-point spacing 256 px = 3x3 points, offsets N(0, 10 px),
            bicubic/nearest/bilinear, reflection padding), torch with 1 thread like a DataLoader worker.

    .venv/bin/python bench/augment.py
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from seg.io import write_json
from seg.transforms.augment import Augmenter
from seg.transforms.weights import border_weight_map

ROOT = Path(__file__).resolve().parents[1]
ISBI = ROOT.parent / "shared" / "data" / "isbi2012"
REPEATS = 20


def rates_interleaved(fns: dict, n=REPEATS) -> tuple[dict, dict]:
    """Samples/s by wall clock and by process CPU time; paths interleaved round-robin so that load
    from other processes on a shared machine hits them alike."""
    wall = dict.fromkeys(fns, 0.0)
    cpu = dict.fromkeys(fns, 0.0)
    for f in fns.values():
        f(0)  # warm-up
    for i in range(1, n + 1):
        for k, f in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            f(i)
            wall[k] += time.perf_counter() - t0
            cpu[k] += time.process_time() - c0
    return {k: n / v for k, v in wall.items()}, {k: n / v for k, v in cpu.items()}


def main() -> int:
    import elasticdeform
    import torch
    from monai.transforms import Rand2DElasticd
    from skimage.measure import label

    torch.set_num_threads(1)
    img = tifffile.imread(ISBI / "train-volume.tif")[0].astype(np.float32)
    img = (img - img.mean()) / img.std()
    lab = (tifffile.imread(ISBI / "train-labels.tif")[0] == 255).astype(np.uint8)
    weights = border_weight_map(label(lab, connectivity=1), class_weights=[2.18, 0.65], semantic=lab)
    targets = {"semantic": lab, "weights": weights}
    aug = Augmenter({})  # schema defaults: 3x3 grid, sigma 10 px, flips, rot90, intensity p=0.5

    def ours(i):
        aug(img, targets, np.random.default_rng(i))

    def ours_crop(i):
        rng = np.random.default_rng(i)
        y, x = rng.integers(0, 512 - 256, size=2)
        aug(img, targets, rng, crop=(slice(y, y + 256), slice(x, x + 256)))

    def naive(i):
        disp = np.random.default_rng(i).normal(0, 10, size=(2, 3, 3))
        elasticdeform.deform_grid(img, disp, order=3, mode="mirror")
        elasticdeform.deform_grid(lab, disp, order=0, mode="mirror")
        elasticdeform.deform_grid(weights, disp, order=1, mode="mirror")

    monai_t = Rand2DElasticd(keys=["image", "label", "weights"], spacing=(256, 256), magnitude_range=(10, 10),
                             prob=1.0, mode=("bicubic", "nearest", "bilinear"), padding_mode="reflection")
    sample = {"image": torch.from_numpy(img)[None], "label": torch.from_numpy(lab)[None].float(),
              "weights": torch.from_numpy(weights)[None]}

    def monai(i):
        monai_t.set_random_state(seed=i)
        monai_t(sample)

    rates, cpu_rates = rates_interleaved({"ours": ours, "ours_crop256": ours_crop, "naive": naive, "monai": monai})
    print(f"one 512x512 sample = image float32 + labels uint8 + weights float32; {REPEATS} samples each")
    print(f"{'path':<44}{'samples/s':>10}{'ms/sample':>11}{'CPU samples/s':>15}")
    names = {"ours": "ours (Augmenter, one elasticdeform call)", "ours_crop256": "ours, 256x256 output crop (training)",
             "naive": "naive (elasticdeform per array, 3 calls)", "monai": "MONAI Rand2DElasticd (1 thread)"}
    for k, r in rates.items():
        print(f"{names[k]:<44}{r:>10.2f}{1000 / r:>11.1f}{cpu_rates[k]:>15.2f}")
    vs_naive, vs_monai = rates["ours"] / rates["naive"], rates["ours"] / rates["monai"]
    print(f"ours vs naive {vs_naive:.2f}x, vs MONAI {vs_monai:.2f}x (full 512x512 output); "
          f"the training crop path is {rates['ours_crop256'] / rates['ours']:.1f}x faster again")
    write_json(ROOT / "bench" / "results" / "augment.json", {
        "samples_per_s": rates, "cpu_samples_per_s": cpu_rates, "vs_naive": vs_naive, "vs_monai": vs_monai,
        "repeats": REPEATS,
        "shape": [512, 512], "torch_threads": 1, "python": sys.version.split()[0],
        "machine": platform.machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(f"RESULT augment samples_per_s={rates['ours']:.2f} vs_naive={vs_naive:.2f} vs_monai={vs_monai:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
