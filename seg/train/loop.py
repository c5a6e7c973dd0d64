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

The loop in named parts: :class:`RunSpec` (the run's settings), :class:`Plan` (what the data and the
model fix: budget, geometry, validation rule), :class:`Trainee` (model, optimiser, scheduler, scaler),
:class:`Tally` (running totals kept in ``last.pt``) and one function per part: set-up, resume,
steps, logging a window, validation with the best checkpoint, the time budget, saving ``last.pt``,
the summary.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from seg.config import dataset_dir
from seg.device import (
    Precision, configure_determinism, peak_memory_mb, precision_for, resolve_device, seed_everything, set_threads
)
from seg.errors import SegError
from seg.io import write_json
from seg.models import build_model, load_pretrained_encoder
from seg.package import read_package
from seg.progress import progress
from seg.settings import POSTPROCESS_KEYS, RunSettings
from seg.targets.base import Target
from seg.train import checkpoint as ckpt, distributed as ddp
from seg.train.losses import build_loss, needs_weights, weighted_mse
from seg.train.optim import build_optimizer, build_scheduler
from seg.train.records import TrainLog, device_name, param_digest, versions
from seg.train.sampling import (
    PatchDataset, PatchGeometry, load_pseudo_slices, load_training_slices, make_loader, patch_geometry
)
from seg.train.state import completed_summary, effective_config, run_identity
from seg.train.validate import load_val_slices, validate


def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed used for training step ``step`` of ``rank``."""
    return int(np.random.SeedSequence([int(seed), int(rank), int(step)]).generate_state(1, np.uint64)[0] >> 1)


def build_training_model(cfg: dict, dataset: str, variant: str, classes: int, *,
                         pretrained: str | Path | None = None, start=None) -> torch.nn.Module:
    """The variant's model (``seg.models.build_model``) with pretrained encoder weights if asked, or
    all the weights of the package it starts from (``start``: :class:`seg.settings.start.StartPackage`).

    ``pretrained`` (a ``.pt`` state dict for ``model.encoder``, e.g. ``seg pretrain``'s ``encoder.pt``)
    wins over the variant's ``pretrained`` setting: ``inhouse`` reads
    ``<results_dir>/<dataset>/pretrain/<encoder>/encoder.pt``, a path reads that file, ``none`` nothing.
    Loaded by ``seg.models.load_pretrained_encoder`` (weights_only).
    """
    var = cfg["variants"][variant]
    model = build_model(var["model"], in_channels=1, classes=classes, **(var.get("params") or {}))
    if start is not None:  # a package's network: every weight, not only the encoder's
        if pretrained or (var.get("pretrained") or "none") != "none":
            raise SegError(f"variants.{variant}: init (a package's weights) and pretrained (encoder weights) "
                           "exclude each other")
        try:
            model.load_state_dict(read_package(start.path).model.state_dict())
        except RuntimeError as e:
            raise SegError(f"variants.{variant}.init: {start.path}'s weights do not fit the variant's "
                           f"{var['model']} with {classes} outputs ({str(e).splitlines()[0][:200]})") from None
        return model
    pre = str(pretrained) if pretrained else (var.get("pretrained") or "none")
    if pre == "inhouse":
        if "-" not in var["model"]:
            raise SegError(f"variants.{variant}.pretrained: 'inhouse' needs an encoder model such as "
                           f"unet-resnet34, not {var['model']!r} (or pass --pretrained <encoder.pt>)")
        encoder = var["model"].split("-", 1)[1]
        pre = str(Path(cfg.get("results_dir", "results")) / dataset / "pretrain" / encoder / "encoder.pt")
    if pre != "none":
        load_pretrained_encoder(model, pre)
    return model


def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, loss_fn, prec: Precision) -> torch.Tensor:
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
          threads: int | None = None, pseudo: str | Path | None = None) -> dict:
    """Train ``variant`` on ``dataset``; returns the summary (also written to ``train_summary.json``).

    Args:
        cfg: the validated config (``seg.settings.load_config``).
        dataset, variant: names in the config.
        out_dir: ``results/<dataset>/<variant>/``.
        data_dir: folder of canonical datasets (default ``cfg["data_dir"]``).
        device: ``auto|cpu|cuda`` overriding ``train.device``.
        iterations: overrides the budget (``train.iterations``; ``epochs`` ignored).
        pretrained: encoder weights file overriding the variant's ``pretrained`` source.
        threads: torch intra-op threads of this process (default: torch's choice).
        pseudo: a ``seg pseudolabel`` folder (variants with ``self_training``): its slices train
            beside the training split (:func:`seg.train.sampling.load_pseudo_slices`).

    Returns:
        The summary dict: iterations, wall_time_s, best_val_iou, best_iteration, samples_per_s,
        peak_memory_mb, device, amp, params, versions, seed, config_hash, model, variant, dataset,
        effective_batch_size, world_size, stopped ("budget" | "max_minutes"), data_wait, patch sizes,
        val_postprocess (CTC: the method, threshold, h and min_size whose val SEG chose ``best.pt``:
        the config's, else the dataset's plan, :mod:`seg.settings.plan`)
        (an empty dict on the other ranks of a DDP run).
    """
    cfg = effective_config(cfg, variant, iterations=iterations)
    chash, seed = run_identity(cfg, dataset, variant)
    ds_dir = dataset_dir(cfg, dataset, data_dir)
    settings = RunSettings(cfg, dataset, variant, ds_dir=ds_dir)
    tcfg = settings.train  # patch_size: the config's, else the plan's
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
    spec = RunSpec(cfg=cfg, settings=settings, tcfg=tcfg, dataset=dataset, variant=variant, out=out,
                   ds_dir=ds_dir, seed=seed, config_hash=chash, env=env,
                   device=dev, pretrained=pretrained, pseudo=Path(pseudo) if pseudo else None)
    ddp.init_process_group(env, dev.type)
    try:
        return _train(spec)
    finally:
        ddp.destroy_process_group()


# ----------------------------------------------------------------------------- the parts of a run
@dataclass(frozen=True)
class RunSpec:
    """The settings of one training process, fixed before the first step.

    Attributes:
        cfg: the effective config (``seg.train.state.effective_config``: budget override folded in).
        settings: the run's settings (:class:`seg.settings.RunSettings`): target, sections,
            post-processing.
        tcfg: the variant's ``train`` section for the dataset (``settings.train``).
        dataset, variant: names in the config.
        out: the run folder (``results/<dataset>/<variant>/``).
        ds_dir: the canonical dataset folder (``seg.config.dataset_dir``).
        seed, config_hash: the run's identity, stored in checkpoints and the summary.
        env: this process's place in the DDP job (rank, world size; one process: rank 0 of 1).
        device: the torch device this process trains on.
        pretrained: encoder weights file overriding the variant's ``pretrained`` source, or None.
        pseudo: the self-training labels folder (``seg pseudolabel``), or None.
    """

    cfg: dict
    settings: RunSettings
    tcfg: dict
    dataset: str
    variant: str
    out: Path
    ds_dir: Path
    seed: int
    config_hash: str
    env: ddp.DistEnv
    device: torch.device
    pretrained: str | Path | None = None
    pseudo: Path | None = None

    @property
    def last_path(self) -> Path:
        return self.out / "checkpoints/last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "checkpoints/best.pt"

    def due(self, every: str, iteration: int, total: int) -> bool:
        """True every ``train.<every>`` steps (``log_every``, ``val_every``, ``checkpoint_every``)
        and after the last step of the budget."""
        return iteration % int(self.tcfg[every]) == 0 or iteration == total


@dataclass(frozen=True)
class Plan:
    """What the data and the model fix for a run.

    Attributes:
        classes: number of output channels (the variant's target's; fg_border: the dataset's classes).
        val_postprocess: CTC data with two classes: the post-processing whose val SEG chooses the
            best checkpoint (min_size and h the config's, else the plan's; the method and seed
            threshold the target's); None: val mean IoU chooses it.
        target: the variant's configured target (:attr:`seg.settings.RunSettings.target`);
            target_record: its :meth:`~seg.targets.base.Target.record`.
        self_training: with ``--pseudo``: the folder and how many of its slices trained beside the
            training split's; None otherwise.
        calibrate: ``postprocess.calibrate``: val scores at the val-chosen threshold.
        n_params: number of model parameters.
        geometry: patch input/output sizes in pixels.
        data: the training patch dataset.
        batch_size: patches per step and process; world_size: number of processes.
        iters_per_epoch: steps that cover the training slices once (all processes together).
        total: the budget in optimiser steps.
        infer_cfg: the variant's ``inference`` section for validation (TTA off).
    """

    classes: int
    val_postprocess: dict | None
    target_record: dict
    target: Target
    self_training: dict | None
    calibrate: bool
    n_params: int
    geometry: PatchGeometry
    data: PatchDataset
    batch_size: int
    world_size: int
    iters_per_epoch: int
    total: int
    infer_cfg: dict


@dataclass
class Trainee:
    """What training changes and how it runs: the model (DDP-wrapped in a distributed run; on the
    device, in the precision's layout), optimiser, lr scheduler, GradScaler (enabled for fp16 only),
    loss ``fn(logits, target, weights) -> scalar`` and precision.

    ``stepper`` is what the training steps call: the model itself, or with ``train.compile`` its
    ``torch.compile`` wrapper (same parameters; checkpoints and validation use ``model``).
    ``compile`` records how that went: ``{"enabled", "fallback" (why it runs eager, or None),
    "first_step_s" (the step that compiled)}``.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: Callable
    prec: Precision
    stepper: torch.nn.Module | None = None
    compile: dict | None = None


@dataclass
class Tally:
    """Running totals of a run (kept in ``last.pt`` across resumes).

    Attributes:
        iteration: completed optimiser steps.
        best_val_iou, best_iteration: the best val score so far and its step (None before any).
        wall_before, step_before, wait_before: training wall time, step time and data-wait time in
            seconds of the earlier sessions of this run (from ``last.pt``).
        step_sum, wait_sum: step and data-wait time in seconds of this session.
        t0: ``time.perf_counter()`` when this session's steps started.
    """

    iteration: int = 0
    best_val_iou: float | None = None
    best_iteration: int | None = None
    wall_before: float = 0.0
    step_before: float = 0.0
    wait_before: float = 0.0
    step_sum: float = 0.0
    wait_sum: float = 0.0
    t0: float = 0.0

    def wall(self, now: float | None = None) -> float:
        """Training wall time in seconds over all sessions, up to ``now`` (default: this moment)."""
        return self.wall_before + ((time.perf_counter() if now is None else now) - self.t0)


@dataclass
class Window:
    """Sums over the steps since the last log row: loss (a tensor: no device sync per step),
    steps, time waiting for data and step time in seconds."""

    loss: torch.Tensor | float = 0.0
    n: int = 0
    wait: float = 0.0
    time: float = 0.0

    def add(self, loss: torch.Tensor, *, wait: float, took: float) -> None:
        """Count one step: its loss, seconds waiting for its batch, seconds from the last step's end."""
        self.loss += loss
        self.n += 1
        self.wait += wait
        self.time += took


def _train(spec: RunSpec) -> dict:
    """One process's run: set-up, resume, steps, final checkpoints and summary (see :func:`train`)."""
    plan, trainee = _setup(spec)
    tally = _resume(spec, plan, trainee)
    if spec.env.distributed:
        trainee.model = torch.nn.parallel.DistributedDataParallel(
            trainee.model, device_ids=[spec.device.index] if spec.device.type == "cuda" else None)
    trainee.stepper = trainee.model
    if spec.tcfg.get("compile"):
        trainee.stepper = torch.compile(trainee.model)
        trainee.compile = {"enabled": True, "fallback": None, "first_step_s": None}
    val_slices = load_val_slices(spec.ds_dir, "val") if spec.env.is_main else []
    log = TrainLog(spec.out / "train_log.csv", tally.iteration) if spec.env.is_main else None
    stopped, saved_at = _run_steps(spec, plan, trainee, tally, val_slices, log)
    wall = tally.wall()
    if saved_at != tally.iteration:
        _save_last(spec, plan, trainee, tally, wall)
    digests = ddp.all_gather_object(spec.env, param_digest(trainee.model))
    if not spec.env.is_main:
        ddp.barrier(spec.env)
        return {}
    log.close()
    if tally.best_val_iou is None:  # no val slices: the final model is the one to use
        _save_best(spec, trainee, tally.iteration, None)
    summary = _summary(spec, plan, trainee, tally, stopped=stopped, wall=wall, digests=digests)
    write_json(spec.out / "train_summary.json", summary)
    ddp.barrier(spec.env)
    return summary


def _setup(spec: RunSpec) -> tuple[Plan, Trainee]:
    """Determinism, seeding, then the model (its initial weights drawn from the seeded global
    generator), the patch data and the budget; then the optimiser, scheduler and scaler."""
    tcfg = spec.tcfg
    configure_determinism(bool(tcfg["deterministic"]), spec.device, compiling=bool(tcfg.get("compile")))
    seed_everything(spec.seed)
    settings = spec.settings
    meta = settings.meta
    # the variant's target on this dataset (three_class: its boundary width and weight)
    target = settings.target
    classes = len(settings.channels)  # the network's output channels
    sparse = meta.get("annotations", "full") == "sparse"  # weight 0 marks the ignored pixels
    model = build_training_model(spec.cfg, spec.dataset, spec.variant, classes, pretrained=spec.pretrained,
                                 start=settings.start)
    geometry = patch_geometry(model, int(tcfg["patch_size"]))
    if bool(spec.cfg["variants"][spec.variant].get("self_training")) != (spec.pseudo is not None):
        raise SegError(f"seg train: variant {spec.variant!r} " + (
            "has self_training: give its seg pseudolabel folder (--pseudo)" if spec.pseudo is None
            else "has no self_training section, but --pseudo was given"))
    # self-training labels are band-limited: their weight maps' zeros mark the ignored pixels
    with_w = needs_weights(tcfg["loss"], sparse=sparse) or spec.pseudo is not None
    if spec.pseudo is not None and settings.start is not None:
        raise SegError(f"seg train: variant {spec.variant!r}: self_training and init cannot be combined")
    slices = load_training_slices(spec.ds_dir, "train", with_weights=with_w, target=target, scale=settings.scale,
                                  instance_kind=settings.kind.instances)
    pseudo = load_pseudo_slices(spec.pseudo, spec.ds_dir, target=target) if spec.pseudo is not None else []
    data = PatchDataset(
        slices + pseudo,
        geometry,
        augment_cfg=settings.augment,
        seed=spec.seed,
        border_sampling=float(tcfg["border_sampling"]),
    )
    B, W = int(tcfg["batch_size"]), spec.env.world_size
    iters_per_epoch = max(1, math.ceil(data.patches_per_epoch() / (B * W)))
    plan = Plan(
        classes=classes,
        # Instance kinds (CTC): the best checkpoint is the one with the best val SEG (annotated cells
        # only), the measure seg calibrate chooses the post-processing by; ISBI: val mean IoU.
        # min_size and h: the config's, else the plan's (never a constant that deletes the objects)
        val_postprocess=settings.val_postprocess,
        target=target,
        target_record=target.record(meta["classes"]),
        self_training=(None if spec.pseudo is None else
                       {"pseudo": str(spec.pseudo), "slices": len(pseudo), "train_slices": len(slices)}),
        calibrate=settings.calibrate,
        n_params=sum(p.numel() for p in model.parameters()),
        geometry=geometry, data=data, batch_size=B, world_size=W, iters_per_epoch=iters_per_epoch,
        total=int(tcfg["epochs"]) * iters_per_epoch if tcfg.get("epochs") else int(tcfg["iterations"]),
        infer_cfg={**settings.inference, "tta": False},
    )
    prec = _agreed_precision(spec, precision_for(
        tcfg, spec.device, model=model, mode="train",
        shape=(B, _in_channels(model), geometry.input_size, geometry.input_size)))
    model = prec.prepare_model(model)
    optimizer = build_optimizer(model.parameters(), tcfg["optimizer"])
    trainee = Trainee(model=model, optimizer=optimizer,
                      scheduler=build_scheduler(optimizer, tcfg["schedule"], plan.total),
                      scaler=prec.scaler(), loss_fn=weighted_mse if target.regression else build_loss(tcfg["loss"]), prec=prec)
    return plan, trainee


def _in_channels(model: torch.nn.Module) -> int:
    """Input channels of a model: those of its first convolution."""
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return int(conv.in_channels) if conv is not None else 1


def _agreed_precision(spec: RunSpec, prec: Precision) -> Precision:
    """Rank 0's precision for every rank of a DDP job (each rank may have probed its own CPU)."""
    if not spec.env.distributed:
        return prec
    first = ddp.all_gather_object(spec.env, (prec.dtype, prec.source, prec.ratio))[0]
    return Precision(prec.device, first[0], prec.channels_last, first[1], first[2])


def _resume(spec: RunSpec, plan: Plan, trainee: Trainee) -> Tally:
    """The totals to start from: those of ``last.pt``, with the model, optimiser, scheduler, scaler
    and random generators restored, if it is of this config and seed; else a fresh start."""
    if not spec.last_path.is_file():
        return Tally()
    state = ckpt.read_training_checkpoint(spec.last_path)
    if state.get("config_hash") != spec.config_hash or state.get("seed") != spec.seed:
        if spec.env.is_main:
            print(f"seg train: {spec.last_path} is from another config or seed; starting afresh")
        return Tally()
    ckpt.unwrap(trainee.model).load_state_dict(state["model"])
    trainee.optimizer.load_state_dict(state["optimizer"])
    trainee.scheduler.load_state_dict(state["scheduler"])
    if trainee.scaler.is_enabled() and state.get("scaler"):  # fp16 only; empty for bf16/fp32 runs
        trainee.scaler.load_state_dict(state["scaler"])
    ckpt.set_rng_state(state["rng"])
    tally = Tally(iteration=int(state["iteration"]), best_val_iou=state.get("best_val_iou"),
                  best_iteration=state.get("best_iteration"), wall_before=float(state.get("wall_time_s", 0.0)),
                  step_before=float(state.get("step_time_s", 0.0)), wait_before=float(state.get("data_wait_s", 0.0)))
    if spec.env.is_main:
        print(f"seg train: resuming {spec.out} from iteration {tally.iteration}/{plan.total}")
    return tally


def _run_steps(spec: RunSpec, plan: Plan, trainee: Trainee, tally: Tally, val_slices: list[dict],
               log: TrainLog | None) -> tuple[str, int]:
    """Step from ``tally.iteration`` until the budget or the time limit, logging, validating and
    saving ``last.pt`` on the way.

    Returns:
        (why it stopped, ``budget`` | ``max_minutes``; the step ``last.pt`` was last saved at in
        this session, -1 if never).
    """
    loader = make_loader(plan.data, start=tally.iteration, stop=plan.total, batch_size=plan.batch_size,
                         rank=spec.env.rank, world_size=plan.world_size, num_workers=int(spec.tcfg["num_workers"]),
                         seed=spec.seed, pin_memory=spec.device.type == "cuda")
    bar = progress(total=plan.total, initial=tally.iteration, disable=not spec.env.is_main,
                   desc=f"train {spec.dataset}/{spec.variant}", unit="it", dynamic_ncols=True)
    max_s = float(spec.tcfg["max_minutes"]) * 60 if spec.tcfg.get("max_minutes") else None
    tally.t0 = time.perf_counter()
    window, stopped, saved_at = Window(), "budget", -1
    batches = iter(loader)
    tick = time.perf_counter()
    while tally.iteration < plan.total:
        batch = next(batches)
        got = time.perf_counter()
        loss, lr = _step(spec, trainee, batch, tally.iteration)
        tally.iteration += 1
        it, done = tally.iteration, time.perf_counter()
        window.add(loss, wait=got - tick, took=done - tick)
        tally.wait_sum, tally.step_sum = tally.wait_sum + (got - tick), tally.step_sum + (done - tick)
        bar.update(1)
        if spec.due("log_every", it, plan.total):
            _log_window(spec, plan, window, log, bar, iteration=it, lr=lr, wall=tally.wall(done))
            window = Window()
        if spec.due("val_every", it, plan.total):
            _validate(spec, plan, trainee, tally, val_slices, log, lr=lr)
        out_of_time = _out_of_time(spec, tally, max_s)
        if spec.due("checkpoint_every", it, plan.total) or out_of_time:
            _save_last(spec, plan, trainee, tally, tally.wall())
            saved_at = it
        if out_of_time and it < plan.total:
            stopped = "max_minutes"
            break
        tick = time.perf_counter()
    bar.close()
    return stopped, saved_at


def _step(spec: RunSpec, trainee: Trainee, batch: dict[str, torch.Tensor],
          iteration: int) -> tuple[torch.Tensor, float]:
    """Optimiser step number ``iteration`` (from 0) with the global torch generator seeded from
    (seed, rank, step) first; returns (the detached loss, the learning rate the step used)."""
    torch.manual_seed(step_seed(spec.seed, spec.env.rank, iteration))
    lr = trainee.optimizer.param_groups[0]["lr"]
    if trainee.compile is not None and trainee.compile["first_step_s"] is None:
        loss = _first_compiled_step(spec, trainee, batch, iteration)
    else:
        loss = train_step(trainee.stepper, batch, trainee.optimizer, trainee.scaler, trainee.loss_fn, trainee.prec)
    trainee.scheduler.step()
    return loss, lr


def _first_compiled_step(spec: RunSpec, trainee: Trainee, batch: dict[str, torch.Tensor],
                         iteration: int) -> torch.Tensor:
    """The first step of a ``train.compile`` run (of this session): compiles, and on failure warns,
    records why and redoes the step in eager mode (compiling fails while tracing the forward pass,
    before any weight changes; the step's random state is set again)."""
    import warnings

    t0 = time.perf_counter()
    try:
        loss = train_step(trainee.stepper, batch, trainee.optimizer, trainee.scaler, trainee.loss_fn, trainee.prec)
    except Exception as e:  # torch.compile raises many kinds (BackendCompilerFailed, Unsupported, ...)
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        warnings.warn(f"train.compile: compiling {spec.variant} failed ({reason}); training eager instead",
                      RuntimeWarning, stacklevel=2)
        trainee.stepper, trainee.compile["fallback"] = trainee.model, reason
        trainee.optimizer.zero_grad(set_to_none=True)
        torch.manual_seed(step_seed(spec.seed, spec.env.rank, iteration))
        loss = train_step(trainee.stepper, batch, trainee.optimizer, trainee.scaler, trainee.loss_fn, trainee.prec)
    trainee.compile["first_step_s"] = round(time.perf_counter() - t0, 3)
    return loss


def _log_window(spec: RunSpec, plan: Plan, window: Window, log: TrainLog | None, bar, *, iteration: int,
                lr: float, wall: float) -> None:
    """One log row of the window: mean loss (averaged over the ranks), lr of the last step, patches/s
    over all ranks, fraction of the time waiting for data, wall time in seconds."""
    mean_loss = float(window.loss) / window.n
    if spec.env.distributed:
        t = torch.tensor([mean_loss], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        mean_loss = float(t) / plan.world_size
    if spec.env.is_main:
        log.write(iteration=iteration, epoch=(iteration - 1) // plan.iters_per_epoch, loss=f"{mean_loss:.6g}",
                  lr=f"{lr:.6g}",
                  samples_per_s=f"{window.n * plan.batch_size * plan.world_size / max(window.time, 1e-9):.4g}",
                  data_wait=f"{window.wait / max(window.time, 1e-9):.4f}", wall_s=f"{wall:.2f}")
        bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")


def _validate(spec: RunSpec, plan: Plan, trainee: Trainee, tally: Tally, val_slices: list[dict],
              log: TrainLog | None, *, lr: float) -> None:
    """Validate on the main process (a log row; a new best score writes ``best.pt``); all ranks wait."""
    if spec.env.is_main and val_slices:
        it = tally.iteration
        iou, _ = validate(ckpt.unwrap(trainee.model), val_slices, plan.infer_cfg, spec.device, plan.classes,
                          calibrate=plan.calibrate, postprocess=plan.val_postprocess,
                          target=plan.target, scale=spec.settings.scale)
        log.write(iteration=it, epoch=(it - 1) // plan.iters_per_epoch, val_iou=f"{iou:.6f}", lr=f"{lr:.6g}",
                  wall_s=f"{tally.wall():.2f}")
        if tally.best_val_iou is None or iou > tally.best_val_iou:
            tally.best_val_iou, tally.best_iteration = iou, it
            _save_best(spec, trainee, it, iou)
    ddp.barrier(spec.env)


def _out_of_time(spec: RunSpec, tally: Tally, max_s: float | None) -> bool:
    """True when the wall-clock budget ``max_s`` (seconds, ``train.max_minutes``) is used up; in a DDP
    run rank 0's clock decides for every rank."""
    out_of_time = max_s is not None and tally.wall() >= max_s
    if spec.env.distributed and max_s is not None:
        flag = torch.tensor([int(out_of_time)])
        torch.distributed.broadcast(flag, src=0)
        out_of_time = bool(flag)
    return out_of_time


def _save_last(spec: RunSpec, plan: Plan, trainee: Trainee, tally: Tally, wall: float) -> None:
    """Write the resumable state to ``last.pt`` (main process; ``wall`` in seconds); all ranks wait."""
    if spec.env.is_main:
        ckpt.save_checkpoint(spec.last_path, {
            "model": ckpt.model_state_cpu(trainee.model), "optimizer": trainee.optimizer.state_dict(),
            "scheduler": trainee.scheduler.state_dict(), "scaler": trainee.scaler.state_dict(),
            "rng": ckpt.rng_state(), "iteration": tally.iteration, "best_val_iou": tally.best_val_iou,
            "best_iteration": tally.best_iteration, "config_hash": spec.config_hash, "seed": spec.seed,
            "wall_time_s": wall, "total_iterations": plan.total,
            "step_time_s": tally.step_before + tally.step_sum, "data_wait_s": tally.wait_before + tally.wait_sum,
        })
    ddp.barrier(spec.env)


def _save_best(spec: RunSpec, trainee: Trainee, iteration: int, val_iou: float | None) -> None:
    """Write the model of step ``iteration`` to ``best.pt`` with its val score (None: no val split)."""
    ckpt.save_checkpoint(spec.best_path, {
        "model": ckpt.model_state_cpu(trainee.model), "iteration": iteration, "best_val_iou": val_iou,
        "best_iteration": iteration, "config_hash": spec.config_hash, "seed": spec.seed,
    })


def _summary(spec: RunSpec, plan: Plan, trainee: Trainee, tally: Tally, *, stopped: str, wall: float,
             digests: list[str]) -> dict:
    """The ``train_summary.json`` document (see :func:`train`)."""
    it, B, W, tcfg = tally.iteration, plan.batch_size, plan.world_size, spec.tcfg
    step_s, wait_s = tally.step_before + tally.step_sum, tally.wait_before + tally.wait_sum
    return {
        "dataset": spec.dataset, "variant": spec.variant, "model": spec.cfg["variants"][spec.variant]["model"],
        "iterations": it, "budget_iterations": plan.total, "stopped": stopped,
        "wall_time_s": round(wall, 3), "best_val_iou": tally.best_val_iou, "best_iteration": tally.best_iteration,
        "val_criterion": "seg" if plan.val_postprocess is not None else "iou_mean",
        "val_postprocess": ({k: plan.val_postprocess[k] for k in ("threshold", *POSTPROCESS_KEYS)
                             if k in plan.val_postprocess}
                            if plan.val_postprocess is not None else None),
        "target": plan.target_record,
        "self_training": plan.self_training,
        **({"init": spec.settings.start.record()} if spec.settings.start is not None else {}),
        "samples_per_s": round(it * B * W / step_s, 4) if step_s > 0 else None,
        "data_wait": round(wait_s / step_s, 5) if step_s > 0 else None,
        "peak_memory_mb": round(peak_memory_mb(spec.device), 1), "device": device_name(spec.device),
        "amp": trainee.prec.name, "channels_last": trainee.prec.channels_last,
        "precision": trainee.prec.record(), "compile": trainee.compile or {"enabled": False},
        "params": int(plan.n_params),
        "versions": versions(), "seed": spec.seed, "config_hash": spec.config_hash, "batch_size": B,
        "world_size": W, "effective_batch_size": B * W, "iterations_per_epoch": plan.iters_per_epoch,
        "patch_input_size": plan.geometry.input_size, "patch_output_size": plan.geometry.output_size,
        "loss": tcfg["loss"]["name"], "optimizer": tcfg["optimizer"]["name"], "schedule": tcfg["schedule"]["name"],
        "deterministic": bool(tcfg["deterministic"]), "rank_param_sha256": digests,
    }
