"""In-house pretraining of an encoder's classification version (``seg pretrain``).

The tasks (where batches come from) are in :mod:`seg.models.pretrain_tasks`: ``patches``
(default; centre-pixel classification on the training split, Ciresan et al. 2012) or
``imagefolder`` (any torchvision ImageFolder tree).

Outputs in ``out`` (each written atomically; the summary last):
    ``encoder.pt``             state dict for ``model.encoder`` (:func:`classifier_to_encoder_state`)
    ``pretrain_summary.json``  held-out accuracy, loss curve, iterations, wall time, seed, ...
    ``curve.png``              training loss and held-out accuracy vs iteration

Optimiser: AdamW (``lr`` from the config, weight decay 1e-4, fused kernels where torch has them)
with cosine decay, cross-entropy loss, in the precision ``pretrain.amp`` picks
(:func:`seg.device.precision_for`: ``auto`` times fp32 against bf16 on a CPU with native bf16) and
channels_last. Same seed, same device and precision => same bytes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seg.config import dataset_dir
from seg.device import precision_for, resolve_device
from seg.errors import SegError
from seg.io import atomic_path, write_json
from seg.models.classification import build_classifier, classifier_to_encoder_state
from seg.models.pretrain_tasks import ImageFolderTask, PatchTask
from seg.progress import progress
from seg.version import __version__


# ----------------------------------------------------------------------------- training
def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, prec, batch: int) -> tuple[float, float]:
    model.eval()
    correct, loss = 0, 0.0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            xb = prec.to_input(torch.from_numpy(x[i : i + batch]))
            yb = torch.from_numpy(y[i : i + batch]).to(prec.device)
            with prec.autocast():
                logits = model(xb).float()
            loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    model.train()
    return correct / len(x), loss / len(x)


def pretrain(task, encoder: str, out: Path, *, iterations: int, batch_size: int, lr: float, seed: int,
             encoder_params: dict | None = None, eval_patches: int = 512, eval_points: int = 10,
             amp: str, device: str = "auto", rng: np.random.Generator | None = None,
             meta: dict | None = None) -> dict:
    """Train ``build_classifier(encoder)`` on ``task`` and write the outputs (module docstring).

    Returns:
        The summary dict written to ``pretrain_summary.json``.
    """
    out = Path(out)
    rng = rng if rng is not None else np.random.default_rng(seed)
    dev = resolve_device(device, section="pretrain")
    torch.manual_seed(seed)
    model = build_classifier(encoder, in_channels=1, num_classes=len(task.classes), **(encoder_params or {}))
    shape = (batch_size, 1, int(getattr(task, "patch_size", 64)), int(getattr(task, "patch_size", 64)))
    prec = precision_for({"amp": amp}, dev, section="pretrain", model=model, shape=shape, mode="train")
    model = prec.prepare_model(model).train()
    # fused kernels (float32 parameters on CPU or CUDA, as build_classifier makes them): deterministic
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4, fused=dev.type in ("cpu", "cuda"))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations)
    eval_rng = np.random.default_rng([seed, 1])
    x_eval, y_eval = task.batch(eval_patches, eval_rng, held_out=True, augment=False)
    eval_at = sorted({int(round(v)) for v in np.linspace(0, iterations, eval_points + 1)})
    losses: list[float] = []
    evals: list[dict] = []

    t0 = time.perf_counter()
    for it in progress(range(iterations + 1), desc=f"pretrain {encoder}"):
        if it in eval_at:
            acc, vloss = _accuracy(model, x_eval, y_eval, prec, max(batch_size, 64))
            evals.append({"iteration": it, "accuracy": acc, "loss": vloss})
        if it == iterations:
            break
        x, y = task.batch(batch_size, rng)
        with prec.autocast():
            logits = model(prec.to_input(torch.from_numpy(x)))
        loss = nn.functional.cross_entropy(logits.float(), torch.from_numpy(y).to(dev))
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
        "seed": seed, "device": str(dev), "precision": prec.record(), "wall_time_s": round(wall, 3),
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
        task = PatchTask(dataset_dir(cfg, dataset, data_dir), pc["patch_size"], pc["held_out_fraction"], rng)
    return pretrain(task, encoder, Path(out), iterations=iterations or pc["iterations"],
                    batch_size=pc["batch_size"], lr=pc["lr"], seed=seed, encoder_params=encoder_params,
                    amp=pc["amp"], rng=rng, meta={"dataset": dataset, "task_name": task_name}, **kwargs)
