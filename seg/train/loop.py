"""The training loop of ``seg train``: resumable, reproducible, single process or DDP.

Outputs in ``out_dir`` (``results/<dataset>/<variant>/``):

- ``checkpoints/last.pt`` every ``train.checkpoint_every`` steps and at the end; ``checkpoints/best.pt``
  at each new best val IoU (at the val-chosen threshold with ``postprocess.calibrate``; CTC data:
  val SEG of the post-processed instances, ``val_criterion`` in the summary; see
  :mod:`seg.train.validate`, and :mod:`seg.train.checkpoint` for the contents);
- ``train_log.csv`` with columns :data:`LOG_COLUMNS` (``val_iou`` only on validation rows);
- ``train_summary.json`` when the budget is complete (see :func:`train`).

Resume: rerunning the same command continues from ``last.pt`` (model, optimiser, scheduler, scaler,
RNG states, data position = iteration count) if its config hash and seed match, and is a no-op if
``train_summary.json`` of the same config hash and seed exists. The global torch generator is
re-seeded before every step from (seed, rank, step), so dropout-like randomness is also a function
of the step only; with the data also a function of the step, a resumed run ends with the same
weights as an uninterrupted one, bit for bit on CPU.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from seg.config import postprocess_section, variant_section
from seg.device import set_threads
from seg.errors import SegError
from seg.io import write_json
from seg.train import checkpoint as ckpt
from seg.train import distributed as ddp
from seg.train.device import configure_determinism, peak_memory_mb, precision_for, resolve_device, seed_everything
from seg.train.losses import build_loss, needs_weights
from seg.train.optim import build_optimizer, build_scheduler
from seg.train.records import TrainLog, device_name, param_digest, versions
from seg.train.sampling import PatchDataset, load_training_slices, make_loader, patch_geometry
from seg.train.state import completed_summary, effective_config, run_identity
from seg.train.validate import load_val_slices, validate



def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed used for training step ``step`` of ``rank``."""
    return int(np.random.SeedSequence([int(seed), int(rank), int(step)]).generate_state(1, np.uint64)[0] >> 1)


def build_training_model(cfg: dict, dataset: str, variant: str, classes: int, *,
                         pretrained: str | Path | None = None) -> torch.nn.Module:
    """The variant's model (``seg.models.build_model``) with pretrained encoder weights if asked.

    ``pretrained`` (a ``.pt`` state dict for ``model.encoder``, e.g. ``seg pretrain``'s ``encoder.pt``)
    wins over the variant's ``pretrained`` setting: ``inhouse`` reads
    ``<results_dir>/<dataset>/pretrain/<encoder>/encoder.pt``, a path reads that file, ``none`` nothing.
    Loaded by ``seg.models.load_pretrained`` (weights_only).
    """
    from seg.models import build_model, load_pretrained

    var = cfg["variants"][variant]
    model = build_model(var["model"], in_channels=1, classes=classes, **(var.get("params") or {}))
    pre = str(pretrained) if pretrained else (var.get("pretrained") or "none")
    if pre == "inhouse":
        if "-" not in var["model"]:
            raise SegError(f"variants.{variant}.pretrained: 'inhouse' needs an encoder model such as "
                           f"unet-resnet34, not {var['model']!r} (or pass --pretrained <encoder.pt>)")
        encoder = var["model"].split("-", 1)[1]
        pre = str(Path(cfg.get("results_dir", "results")) / dataset / "pretrain" / encoder / "encoder.pt")
    if pre != "none":
        load_pretrained(model, pre)
    return model


def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, loss_fn, prec) -> torch.Tensor:
    """One optimiser step on a batch from :class:`seg.train.sampling.PatchDataset` (image (N,1,h,w),
    target (N,h',w'), optional weights); forward under the precision's autocast, loss in float32,
    backward (scaled for fp16), step. Returns the (detached) loss."""
    x = prec.to_input(batch["image"])
    y = batch["target"].to(prec.device, non_blocking=True)
    w = batch["weights"].to(prec.device, non_blocking=True) if "weights" in batch else None
    optimizer.zero_grad(set_to_none=True)
    with prec.autocast():
        logits = model(x)
    loss = loss_fn(logits, y, w)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train(cfg: dict, dataset: str, variant: str, out_dir: str | Path, *, data_dir: str | Path | None = None,
          device: str | None = None, iterations: int | None = None, pretrained: str | Path | None = None,
          threads: int | None = None) -> dict:
    """Train ``variant`` on ``dataset``; returns the summary (also written to ``train_summary.json``).

    Args:
        cfg: the validated config (``seg.config.load_config``).
        dataset, variant: names in the config.
        out_dir: ``results/<dataset>/<variant>/``.
        data_dir: folder of canonical datasets (default ``cfg["data_dir"]``).
        device: ``auto|cpu|cuda`` overriding ``train.device``.
        iterations: overrides the budget (``train.iterations``; ``epochs`` ignored).
        pretrained: encoder weights file overriding the variant's ``pretrained`` source.
        threads: torch intra-op threads of this process (default: torch's choice).

    Returns:
        The summary dict: iterations, wall_time_s, best_val_iou, best_iteration, samples_per_s,
        peak_memory_mb, device, amp, params, versions, seed, config_hash, model, variant, dataset,
        effective_batch_size, world_size, stopped ("budget" | "max_minutes"), data_wait, patch sizes.
    """
    cfg = effective_config(cfg, variant, iterations=iterations)
    chash, seed = run_identity(cfg, dataset, variant)
    tcfg = variant_section(cfg, variant, "train", dataset)
    out = Path(out_dir)
    done = completed_summary(cfg, dataset, variant, out)
    if done is not None:
        print(f"seg train: {out / 'train_summary.json'} is complete for this config ({chash}); nothing to do")
        return done

    set_threads(threads)
    env = ddp.dist_env_from_environ()
    dev = resolve_device(device or tcfg["device"], local_rank=env.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    ddp.init_process_group(env, dev.type)
    try:
        return _train(cfg, tcfg, dataset, variant, out, seed, chash, env, dev, data_dir, pretrained)
    finally:
        ddp.destroy_process_group()


def _train(cfg, tcfg, dataset, variant, out, seed, chash, env, dev, data_dir, pretrained) -> dict:
    from seg.data.canonical import load_meta
    from seg.progress import progress

    configure_determinism(bool(tcfg["deterministic"]), dev)
    seed_everything(seed)
    ds_dir = Path(data_dir or cfg.get("data_dir", "data")) / dataset
    meta = load_meta(ds_dir)
    classes = len(meta["classes"])
    sparse = meta.get("annotations", "full") == "sparse"  # weight 0 marks the ignored pixels
    pp = postprocess_section(cfg, dataset)
    # CTC: the best checkpoint is the one with the best val SEG (annotated cells only), the measure
    # seg calibrate chooses the post-processing by; ISBI: val mean IoU.
    val_pp = pp if meta["kind"] == "ctc" and classes == 2 else None
    model = build_training_model(cfg, dataset, variant, classes, pretrained=pretrained)
    n_params = sum(p.numel() for p in model.parameters())
    geometry = patch_geometry(model, int(tcfg["patch_size"]))
    loss_fn = build_loss(tcfg["loss"])
    data = PatchDataset(
        load_training_slices(ds_dir, "train", with_weights=needs_weights(tcfg["loss"], sparse=sparse)),
        geometry,
        augment_cfg=variant_section(cfg, variant, "augment", dataset),
        seed=seed,
        border_sampling=float(tcfg["border_sampling"]),
    )
    B, W = int(tcfg["batch_size"]), env.world_size
    iters_per_epoch = max(1, math.ceil(data.patches_per_epoch() / (B * W)))
    total = int(tcfg["epochs"]) * iters_per_epoch if tcfg.get("epochs") else int(tcfg["iterations"])

    prec = precision_for(tcfg, dev)
    model = prec.prepare_model(model)
    optimizer = build_optimizer(model.parameters(), tcfg["optimizer"])
    scheduler = build_scheduler(optimizer, tcfg["schedule"], total)
    scaler = prec.scaler()

    start, best_iou, best_it, wall_before, step_before, wait_before = 0, None, None, 0.0, 0.0, 0.0
    if (out / "checkpoints/last.pt").is_file():
        state = ckpt.load_checkpoint(out / "checkpoints/last.pt", map_location="cpu")
        if state.get("config_hash") == chash and state.get("seed") == seed:
            ckpt.unwrap(model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler.is_enabled() and state.get("scaler"):  # fp16 only; empty for bf16/fp32 runs
                scaler.load_state_dict(state["scaler"])
            ckpt.set_rng_state(state["rng"])
            start, best_iou = int(state["iteration"]), state.get("best_val_iou")
            best_it, wall_before = state.get("best_iteration"), float(state.get("wall_time_s", 0.0))
            step_before, wait_before = float(state.get("step_time_s", 0.0)), float(state.get("data_wait_s", 0.0))
            if env.is_main:
                print(f"seg train: resuming {out} from iteration {start}/{total}")
        elif env.is_main:
            print(f"seg train: {out / 'checkpoints/last.pt'} is from another config or seed; starting afresh")

    if env.distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    infer_cfg = {**variant_section(cfg, variant, "inference", dataset), "tta": False}
    val_slices = load_val_slices(ds_dir, "val") if env.is_main else []
    log = TrainLog(out / "train_log.csv", start) if env.is_main else None

    def save_last(iteration: int, wall: float) -> None:
        if env.is_main:
            ckpt.save_checkpoint(out / "checkpoints/last.pt", {
                "model": ckpt.model_state_cpu(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": ckpt.rng_state(),
                "iteration": iteration, "best_val_iou": best_iou, "best_iteration": best_it,
                "config_hash": chash, "seed": seed, "wall_time_s": wall, "total_iterations": total,
                "step_time_s": step_before + step_sum, "data_wait_s": wait_before + wait_sum,
            })
        ddp.barrier(env)

    loader = make_loader(data, start=start, stop=total, batch_size=B, rank=env.rank, world_size=W,
                         num_workers=int(tcfg["num_workers"]), seed=seed, pin_memory=dev.type == "cuda")
    bar = progress(total=total, initial=start, disable=not env.is_main, desc=f"train {dataset}/{variant}",
               unit="it", dynamic_ncols=True)
    max_s = float(tcfg["max_minutes"]) * 60 if tcfg.get("max_minutes") else None
    t0 = time.perf_counter()
    wait_sum = step_sum = 0.0
    win = {"loss": 0.0, "n": 0, "wait": 0.0, "time": 0.0}
    it, stopped, saved_at = start, "budget", -1
    batches = iter(loader)
    tick = time.perf_counter()
    while it < total:
        batch = next(batches)
        got = time.perf_counter()
        torch.manual_seed(step_seed(seed, env.rank, it))
        lr = optimizer.param_groups[0]["lr"]
        loss = train_step(model, batch, optimizer, scaler, loss_fn, prec)
        scheduler.step()
        it += 1
        done = time.perf_counter()
        win["loss"] += loss  # a tensor: no device sync per step
        win["n"] += 1
        win["wait"] += got - tick
        win["time"] += done - tick
        wait_sum, step_sum = wait_sum + (got - tick), step_sum + (done - tick)
        wall = wall_before + (done - t0)
        bar.update(1)

        if it % int(tcfg["log_every"]) == 0 or it == total:
            mean_loss = float(win["loss"]) / win["n"]
            if env.distributed:
                t = torch.tensor([mean_loss], dtype=torch.float64)
                torch.distributed.all_reduce(t)
                mean_loss = float(t) / W
            if env.is_main:
                log.write(iteration=it, epoch=(it - 1) // iters_per_epoch, loss=f"{mean_loss:.6g}", lr=f"{lr:.6g}",
                          samples_per_s=f"{win['n'] * B * W / max(win['time'], 1e-9):.4g}",
                          data_wait=f"{win['wait'] / max(win['time'], 1e-9):.4f}", wall_s=f"{wall:.2f}")
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
            win = {"loss": 0.0, "n": 0, "wait": 0.0, "time": 0.0}

        if it % int(tcfg["val_every"]) == 0 or it == total:
            if env.is_main and val_slices:
                iou, _ = validate(ckpt.unwrap(model), val_slices, infer_cfg, dev, classes,
                                  calibrate=bool(pp["calibrate"]), postprocess=val_pp)
                log.write(iteration=it, epoch=(it - 1) // iters_per_epoch, val_iou=f"{iou:.6f}", lr=f"{lr:.6g}",
                          wall_s=f"{wall_before + time.perf_counter() - t0:.2f}")
                if best_iou is None or iou > best_iou:
                    best_iou, best_it = iou, it
                    ckpt.save_checkpoint(out / "checkpoints/best.pt", {
                        "model": ckpt.model_state_cpu(model), "iteration": it, "best_val_iou": iou,
                        "best_iteration": it, "config_hash": chash, "seed": seed,
                    })
            ddp.barrier(env)

        out_of_time = max_s is not None and wall_before + (time.perf_counter() - t0) >= max_s
        if env.distributed and max_s is not None:
            flag = torch.tensor([int(out_of_time)])
            torch.distributed.broadcast(flag, src=0)
            out_of_time = bool(flag)
        if it % int(tcfg["checkpoint_every"]) == 0 or it == total or out_of_time:
            save_last(it, wall_before + time.perf_counter() - t0)
            saved_at = it
        if out_of_time and it < total:
            stopped = "max_minutes"
            break
        tick = time.perf_counter()
    bar.close()
    del batches, loader
    wall = wall_before + time.perf_counter() - t0
    if saved_at != it:
        save_last(it, wall)
    digests = ddp.all_gather_object(env, param_digest(model))
    if not env.is_main:
        ddp.barrier(env)
        return {}
    log.close()
    if best_iou is None:  # no val slices: the final model is the one to use
        ckpt.save_checkpoint(out / "checkpoints/best.pt", {
            "model": ckpt.model_state_cpu(model), "iteration": it, "best_val_iou": None, "best_iteration": it,
            "config_hash": chash, "seed": seed,
        })
    summary = {
        "dataset": dataset, "variant": variant, "model": cfg["variants"][variant]["model"],
        "iterations": it, "budget_iterations": total, "stopped": stopped,
        "wall_time_s": round(wall, 3), "best_val_iou": best_iou, "best_iteration": best_it,
        "val_criterion": "seg" if val_pp is not None else "iou_mean",
        "samples_per_s": round(it * B * W / (step_before + step_sum), 4) if step_before + step_sum > 0 else None,
        "data_wait": round((wait_before + wait_sum) / (step_before + step_sum), 5) if step_before + step_sum > 0 else None,
        "peak_memory_mb": round(peak_memory_mb(dev), 1), "device": device_name(dev), "amp": prec.name,
        "channels_last": prec.channels_last, "params": int(n_params), "versions": versions(), "seed": seed,
        "config_hash": chash, "batch_size": B, "world_size": W, "effective_batch_size": B * W,
        "iterations_per_epoch": iters_per_epoch, "patch_input_size": geometry.input_size,
        "patch_output_size": geometry.output_size, "loss": tcfg["loss"]["name"],
        "optimizer": tcfg["optimizer"]["name"], "schedule": tcfg["schedule"]["name"],
        "deterministic": bool(tcfg["deterministic"]), "rank_param_sha256": digests,
    }
    write_json(out / "train_summary.json", summary)
    ddp.barrier(env)
    return summary

