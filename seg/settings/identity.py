"""A run's identity: the hashes that name what a step computed from the config.

:func:`run_config_hash` names a trained (dataset, variant) model (checkpoints, summaries, the
leaderboard's merge of seeds); :func:`step_settings` / :func:`step_hash` are each workflow rule's
``params.hash``, so Snakemake reruns a step exactly when a setting it reads changes. The hashes of
the built-in configs are pinned by the tests: a change here that moves one reruns every user's
workflow.
"""

from __future__ import annotations

from seg.config import OVERRIDABLE, config_hash, dataset_entry, postprocess_section, variant_section
from seg.errors import SegError
from seg.kinds import get_kind
from seg.settings.start import start_package
from seg.targets import is_default

# Keys of a dataset entry that say whether and how the workflow finds it, not what it ingests.
_AVAILABILITY_KEYS = ("enabled", "on_missing")


def run_config_hash(cfg: dict, dataset: str, variant: str) -> str:
    """Hash of everything that determines a trained (dataset, variant) model: the identity stored in
    checkpoints and summaries and used to merge leaderboard rows of the same setting across runs
    (the seed is excluded so that runs with different seeds merge into mean +- spread).

    It covers the dataset entry, the variant's model, its train/augment/inference sections, the
    border weights, the pretraining settings when the variant uses in-house pretrained weights, and
    the post-processing settings training reads (``calibrate``: how the best checkpoint is chosen;
    CTC data also method, threshold, h and min_size: validation scores SEG of the instances).
    """
    var = cfg["variants"][variant]
    relevant = {
        "dataset": {k: v for k, v in dataset_entry(cfg, dataset).items() if k not in _AVAILABILITY_KEYS},
        # the default target (fg_border): written or not, the same run
        "variant": {k: v for k, v in var.items() if k not in ("label", "per_dataset", *OVERRIDABLE)
                    and not (k == "target" and is_default(v))},
        **{s: variant_section(cfg, variant, s, dataset) for s in OVERRIDABLE},
        "weights": cfg["weights"],
        "calibrate": postprocess_section(cfg, dataset)["calibrate"],
    }
    keys = get_kind(dataset_entry(cfg, dataset)["kind"]).validation_postprocess_keys()
    if keys:  # instance kinds (CTC): validation scores SEG of post-processed instances
        pp = postprocess_section(cfg, dataset)
        relevant["val_postprocess"] = {k: pp[k] for k in keys}
        if not is_default(var.get("target")):  # the target's own settings (seed threshold)
            relevant["val_postprocess"]["seed_threshold"] = pp.get("seed_threshold")
    if var.get("init"):  # the package's weights, not only its path, are the start
        from_package = start_package(var["init"], None, where=f"variants.{variant}.init")
        relevant["init_weights"] = from_package.weights_sha256
    if var.get("pretrained") == "inhouse":
        relevant["pretrain"] = cfg["pretrain"]
    if var.get("self_training"):  # its extra labels are the teacher's: the teacher's run is part of it
        relevant["teacher"] = run_config_hash(cfg, dataset, var["self_training"]["teacher"])
    return config_hash(relevant)


def step_settings(cfg: dict, step: str, dataset: str | None = None, variant: str | None = None) -> dict:
    """The config settings workflow step ``step`` reads besides its input files.

    Each rule of ``pipeline/*.smk`` passes :func:`step_hash` of these as a parameter, so Snakemake
    reruns a step exactly when one of them changes (its inputs' own reruns propagate as usual).

    Steps: ``ingest`` (dataset), ``weights`` (dataset), ``augment`` (dataset), ``pretrain`` (dataset),
    ``train`` / ``pseudolabel`` / ``predict`` / ``calibrate`` / ``score`` (dataset, variant),
    ``leaderboard`` (the whole config: the report shows it).
    """
    if step == "leaderboard":
        return cfg
    entry = dataset_entry(cfg, dataset)
    seed = int(cfg.get("seed", 0))
    if step == "ingest":
        return {k: v for k, v in entry.items() if k not in _AVAILABILITY_KEYS}
    if step == "weights":
        return {"weights": cfg["weights"]}
    if step == "augment":  # deformed copies with their weight maps, seeded
        return {"augment": cfg["augment"], "weights": cfg["weights"], "seed": seed}
    if step == "pretrain":
        return {"pretrain": cfg["pretrain"], "seed": seed}
    if variant not in cfg["variants"]:
        raise SegError(f"config: unknown variant {variant!r} (configured: {', '.join(cfg['variants'])})")
    if step == "train":
        return {"run": run_config_hash(cfg, dataset, variant), "seed": seed}
    if step == "pseudolabel":  # the teacher's run and how its objects are chosen and weighted
        st = cfg["variants"][variant].get("self_training") or {}
        teacher = st.get("teacher", variant)
        return {"self_training": st, "teacher": run_config_hash(cfg, dataset, teacher), "seed": seed,
                "inference": variant_section(cfg, teacher, "inference", dataset),
                "postprocess": postprocess_section(cfg, dataset), "weights": cfg["weights"], "kind": entry["kind"]}
    default_target = is_default(cfg["variants"][variant].get("target"))
    target = cfg["variants"][variant].get("target")
    if step == "predict":
        out = {"inference": variant_section(cfg, variant, "inference", dataset),
               "postprocess": postprocess_section(cfg, dataset), "kind": entry["kind"]}
        return out if default_target else {**out, "target": target}
    if step == "calibrate":
        out = {"postprocess": postprocess_section(cfg, dataset), "kind": entry["kind"]}
        return out if default_target else {**out, "target": target}
    if step == "score":
        return {"scoring": cfg["scoring"], "label": cfg["variants"][variant].get("label"), "seed": seed}
    raise SegError(f"unknown workflow step {step!r}")


def step_hash(cfg: dict, step: str, dataset: str | None = None, variant: str | None = None) -> str:
    """:func:`config_hash` of :func:`step_settings` (a rule's ``params.hash``)."""
    return config_hash(step_settings(cfg, step, dataset, variant))
