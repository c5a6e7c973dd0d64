"""In-house pretraining of an encoder's classification version (``seg pretrain``).

Task ``patches`` (default; Ciresan et al., NIPS 2012, the ISBI 2012 winner before U-Net): classify
the centre pixel of a ``patch_size`` x ``patch_size`` window of a normalised image as class 0 or 1 of
the dataset's semantic map (ISBI: membrane vs interior; CTC: background vs cell), classes balanced
(each batch draws the same number of centres per class). Only **training-split** slices are used: a
``held_out_fraction`` of them (at least one, chosen with the seed) supplies a fixed, balanced set of
held-out patches for the reported accuracy; val/test slices are never read. Images are padded by
reflection so centres can lie anywhere. Training patches get random flips / 90-degree rotations.

Task ``imagefolder``: any torchvision ``ImageFolder`` directory (class = sub-folder), converted to
grayscale, resized (short side) and center-cropped to ``patch_size``, normalised per image like the
slices; a ``held_out_fraction`` of its images (seeded) is held out.

Outputs in ``out`` (each written atomically; the summary last):
    ``encoder.pt``             state dict for ``model.encoder`` (:func:`classifier_to_encoder_state`)
    ``pretrain_summary.json``  held-out accuracy, loss curve, iterations, wall time, seed, ...
    ``curve.png``              training loss and held-out accuracy vs iteration

Optimiser: AdamW (``lr`` from the config, weight decay 1e-4) with cosine decay, cross-entropy loss.
Same seed, same device => same bytes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seg.errors import SegError
from seg.io import atomic_path, write_json
from seg.models.classification import build_classifier, classifier_to_encoder_state


# ----------------------------------------------------------------------------- patch task (arrays)
def class_pools(semantics: list[np.ndarray], num_classes: int) -> list[tuple[int, list[np.ndarray]]]:
    """Per class present: (class, flat pixel indices of that class in each slice)."""
    pools = []
    for c in range(num_classes):
        per_slice = [np.flatnonzero(s.ravel() == c) for s in semantics]
        if sum(len(p) for p in per_slice):
            pools.append((c, per_slice))
    if len(pools) < 2:
        raise SegError("pretrain: the training slices contain fewer than two classes")
    return pools


def balanced_centres(semantics: list[np.ndarray], n: int, num_classes: int, rng: np.random.Generator,
                     pools: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` patch centres, classes as equal as possible, uniform within a class.

    Args:
        semantics: class maps uint8 (H, W), one per slice.
        n: number of centres.
        num_classes: classes 0..num_classes-1; classes absent from all maps are skipped.
        pools: :func:`class_pools` of ``semantics`` (computed if None; pass it to save time).

    Returns:
        centres int64 (n, 3) rows (slice index, y, x) and labels int64 (n,).
    """
    pools = pools if pools is not None else class_pools(semantics, num_classes)
    which = np.arange(n) % len(pools)
    rng.shuffle(which)
    centres = np.zeros((n, 3), np.int64)
    labels = np.zeros(n, np.int64)
    for j, (c, per_slice) in enumerate(pools):
        rows = np.flatnonzero(which == j)
        cum = np.cumsum([len(p) for p in per_slice])
        flat = rng.integers(0, cum[-1], size=len(rows))
        sl = np.searchsorted(cum, flat, side="right")
        off = flat - np.concatenate([[0], cum])[sl]
        pix = np.array([per_slice[i][o] for i, o in zip(sl, off)], dtype=np.int64)
        widths = np.array([semantics[i].shape[1] for i in sl], dtype=np.int64)
        if len(rows):
            centres[rows] = np.stack([sl, pix // widths, pix % widths], axis=1)
        labels[rows] = c
    return centres, labels


def extract_patches(padded: list[np.ndarray], centres: np.ndarray, patch_size: int) -> np.ndarray:
    """float32 (n, 1, P, P) windows; ``padded[i]`` is slice i padded by P // 2 on every side, so the
    window of centre (y, x) is ``padded[i][y : y + P, x : x + P]`` (centre pixel at index P // 2)."""
    out = np.empty((len(centres), 1, patch_size, patch_size), np.float32)
    for k, (i, y, x) in enumerate(centres):
        out[k, 0] = padded[i][y : y + patch_size, x : x + patch_size]
    return out


def random_dihedral(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flip / 90-degree rotation per sample of (n, C, P, P)."""
    out = batch.copy()
    for k in range(len(out)):
        r, f = rng.integers(4), rng.integers(2)
        x = np.rot90(out[k], r, axes=(1, 2))
        out[k] = x[:, :, ::-1] if f else x
    return out


class PatchTask:
    """Centre-pixel classification on the training split of a canonical dataset."""

    def __init__(self, ds_dir: Path, patch_size: int, held_out_fraction: float, rng: np.random.Generator):
        from seg.data import canonical

        meta = canonical.load_meta(ds_dir)
        train = [s for s in canonical.slices(meta, "train") if s.get("semantic")]
        if len(train) < 2:
            raise SegError(f"{ds_dir}/meta.json: pretrain needs >= 2 annotated training slices "
                           f"(one is held out), found {len(train)}")
        self.classes = list(meta["classes"])
        n_hold = min(len(train) - 1, max(1, int(round(held_out_fraction * len(train)))))
        order = rng.permutation(len(train))
        self.held_out_ids = sorted(train[i]["id"] for i in order[:n_hold])
        self.train_ids = sorted(train[i]["id"] for i in order[n_hold:])
        self.patch_size = patch_size
        pad = patch_size // 2

        def load(ids):
            ents = [s for s in train if s["id"] in ids]
            imgs = [np.pad(canonical.load_image(ds_dir, e), pad, mode="reflect") for e in ents]
            sems = [canonical.load_semantic(ds_dir, e) for e in ents]
            return imgs, sems, class_pools(sems, len(self.classes))

        self._train = load(set(self.train_ids))
        self._held = load(set(self.held_out_ids))

    def batch(self, n: int, rng: np.random.Generator, *, held_out: bool = False, augment: bool = True):
        imgs, sems, pools = self._held if held_out else self._train
        centres, labels = balanced_centres(sems, n, len(self.classes), rng, pools)
        x = extract_patches(imgs, centres, self.patch_size)
        return (random_dihedral(x, rng) if augment else x), labels


class ImageFolderTask:
    """Image classification on a torchvision ``ImageFolder`` tree, grayscale, ``patch_size`` crops."""

    def __init__(self, root: Path, patch_size: int, held_out_fraction: float, rng: np.random.Generator):
        from torchvision import datasets, transforms

        if not Path(root).is_dir():
            raise SegError(f"{root}: pretrain.imagefolder: directory not found")
        tf = transforms.Compose([transforms.Grayscale(1), transforms.Resize(patch_size),
                                 transforms.CenterCrop(patch_size), transforms.PILToTensor()])
        try:
            self.ds = datasets.ImageFolder(str(root), transform=tf)
        except (FileNotFoundError, RuntimeError) as e:
            raise SegError(f"{root}: not an ImageFolder tree ({e})") from None
        self.classes = list(self.ds.classes)
        self.patch_size = patch_size
        order = rng.permutation(len(self.ds))
        n_hold = min(len(order) - 1, max(1, int(round(held_out_fraction * len(order)))))
        if n_hold < 1 or len(self.classes) < 2:
            raise SegError(f"{root}: pretrain needs >= 2 classes and >= 2 images")
        self.held_idx, self.train_idx = order[:n_hold], order[n_hold:]
        self.held_out_ids = [str(Path(self.ds.samples[i][0]).relative_to(root)) for i in sorted(self.held_idx)]

    def batch(self, n: int, rng: np.random.Generator, *, held_out: bool = False, augment: bool = True):
        from seg.data.canonical import normalise

        pool = self.held_idx if held_out else self.train_idx
        idx = pool[rng.integers(0, len(pool), size=n)] if not held_out else pool[:n]
        xs, ys = [], []
        for i in idx:
            img, y = self.ds[int(i)]
            xs.append(normalise(img.numpy()[0])[None])
            ys.append(y)
        x = np.stack(xs)
        return (random_dihedral(x, rng) if augment else x), np.asarray(ys, np.int64)


# ----------------------------------------------------------------------------- training
def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, device, batch: int) -> tuple[float, float]:
    model.eval()
    correct, loss = 0, 0.0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i : i + batch]).to(device)
            yb = torch.from_numpy(y[i : i + batch]).to(device)
            logits = model(xb)
            loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    model.train()
    return correct / len(x), loss / len(x)


def pretrain(task, encoder: str, out: Path, *, iterations: int, batch_size: int, lr: float, seed: int,
             encoder_params: dict | None = None, eval_patches: int = 512, eval_points: int = 10,
             device: str = "auto", rng: np.random.Generator | None = None, meta: dict | None = None) -> dict:
    """Train ``build_classifier(encoder)`` on ``task`` and write the outputs (module docstring).

    Returns:
        The summary dict written to ``pretrain_summary.json``.
    """
    out = Path(out)
    rng = rng if rng is not None else np.random.default_rng(seed)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    torch.manual_seed(seed)
    model = build_classifier(encoder, in_channels=1, num_classes=len(task.classes), **(encoder_params or {}))
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations)
    eval_rng = np.random.default_rng([seed, 1])
    x_eval, y_eval = task.batch(eval_patches, eval_rng, held_out=True, augment=False)
    eval_at = sorted({int(round(v)) for v in np.linspace(0, iterations, eval_points + 1)})
    losses: list[float] = []
    evals: list[dict] = []
    from seg.progress import progress

    t0 = time.perf_counter()
    for it in progress(range(iterations + 1), desc=f"pretrain {encoder}"):
        if it in eval_at:
            acc, vloss = _accuracy(model, x_eval, y_eval, dev, max(batch_size, 64))
            evals.append({"iteration": it, "accuracy": acc, "loss": vloss})
        if it == iterations:
            break
        x, y = task.batch(batch_size, rng)
        logits = model(torch.from_numpy(x).to(dev))
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(y).to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    wall = time.perf_counter() - t0

    enc_state = {k: v.detach().cpu().clone()
                 for k, v in classifier_to_encoder_state(model.state_dict(), encoder).items()}
    with atomic_path(out / "encoder.pt") as tmp:
        torch.save(enc_state, tmp)
    classes_hist = np.bincount(y_eval, minlength=len(task.classes))
    summary = {
        "encoder": encoder, "encoder_params": encoder_params or {}, "task": type(task).__name__,
        "classes": task.classes, "iterations": iterations, "batch_size": batch_size,
        "patch_size": getattr(task, "patch_size", None), "lr": lr, "optimizer": "adamw+cosine",
        "seed": seed, "device": str(dev), "wall_time_s": round(wall, 3),
        "params": sum(p.numel() for p in model.parameters()), "encoder_tensors": len(enc_state),
        "held_out": {"ids": task.held_out_ids, "train_ids": getattr(task, "train_ids", None),
                     "patches": int(len(y_eval)), "per_class": classes_hist.tolist(),
                     "chance_accuracy": float(classes_hist.max() / classes_hist.sum())},
        "held_out_accuracy": evals[-1]["accuracy"], "held_out_loss": evals[-1]["loss"],
        "initial_held_out_accuracy": evals[0]["accuracy"],
        "loss": [round(v, 6) for v in losses], "eval": evals,
        "versions": _versions(), **(meta or {}),
    }
    title = f"pretrain {encoder}: {summary.get('task_name', summary['task'])} {summary.get('dataset', '')}"
    write_curve(out / "curve.png", losses, evals, title=title, chance=summary["held_out"]["chance_accuracy"])
    write_json(out / "pretrain_summary.json", summary)
    return summary


def _versions() -> dict:
    import torchvision

    from seg import __version__

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "seg": __version__}


def write_curve(path: Path, losses: list[float], evals: list[dict], *, title: str = "",
                chance: float | None = None) -> None:
    """Two panels: training loss (per iteration, with a running mean) and held-out accuracy
    (with the chance level, the majority-class share of the held-out patches, dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    it = np.arange(1, len(losses) + 1)
    a.plot(it, losses, lw=0.6, alpha=0.5, label="per iteration")
    if len(losses) >= 5:
        k = max(1, len(losses) // 20)
        a.plot(it[k - 1 :], np.convolve(losses, np.ones(k) / k, mode="valid"), lw=1.5, label=f"mean of {k}")
    a.set_xlabel("iteration (optimiser steps)")
    a.set_ylabel("training loss (cross-entropy, nats)")
    a.legend(fontsize=8)
    b.plot([e["iteration"] for e in evals], [100 * e["accuracy"] for e in evals], "o-", label="held-out")
    if chance is not None:
        b.axhline(100 * chance, ls="--", c="gray", lw=1, label="chance")
    b.legend(fontsize=8, loc="lower right")
    b.set_xlabel("iteration (optimiser steps)")
    b.set_ylabel("held-out accuracy (%)")
    b.set_ylim(0, 100)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_pretrain(cfg: dict, dataset: str, encoder: str, out: os.PathLike, *, data_dir: str | None = None,
                 encoder_params: dict | None = None, iterations: int | None = None,
                 imagefolder: str | None = None, **kwargs) -> dict:
    """``seg pretrain``: build the task from the config's ``pretrain`` section and train.

    ``kwargs`` go to :func:`pretrain` (eval_patches, eval_points, device).
    """
    pc = dict(cfg["pretrain"])
    seed = int(cfg.get("seed", 0))
    rng = np.random.default_rng(seed)
    task_name = "imagefolder" if imagefolder else pc["task"]
    if task_name == "imagefolder":
        root = imagefolder or pc.get("imagefolder")
        if not root:
            raise SegError("config: pretrain.imagefolder: required for task imagefolder")
        task = ImageFolderTask(Path(root), pc["patch_size"], pc["held_out_fraction"], rng)
    else:
        if dataset not in cfg["datasets"]:
            raise SegError(f"config: datasets: unknown dataset {dataset!r} (configured: {', '.join(cfg['datasets'])})")
        ds_dir = Path(data_dir or cfg.get("data_dir", "data")) / dataset
        task = PatchTask(ds_dir, pc["patch_size"], pc["held_out_fraction"], rng)
    return pretrain(task, encoder, Path(out), iterations=iterations or pc["iterations"],
                    batch_size=pc["batch_size"], lr=pc["lr"], seed=seed, encoder_params=encoder_params,
                    rng=rng, meta={"dataset": dataset, "task_name": task_name}, **kwargs)
