# Validation, the resolved config file every `seg` command reads, dataset availability, target lists.
# Logic lives in the tested `seg` package; this file only wires it into the workflow.

import copy
import os
import re
import shlex

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from seg.config import config_hash, run_config_hash, validate_config, variant_datasets
from seg.errors import SegError

# 1. Validate: seg's own checks first (they name the key and list what is allowed), then Snakemake's
#    validator on the same schema, which also fills in defaults.
try:
    validate_config(copy.deepcopy(config), where="config")
except SegError as e:
    raise WorkflowError(str(e))
validate(config, "../configs/schema.yaml", set_default=True)
validate_config(config, where="config")

DATA = config["data_dir"]
RESULTS = config["results_dir"]
# Every rule runs `python -m seg <command>` (the `seg` console script) from the project's environment
# (.venv, or pipeline/envs/seg.yaml with --sdm conda); the package comes from this repository.
SEG = f"PYTHONPATH={shlex.quote(workflow.basedir)}${{PYTHONPATH:+:$PYTHONPATH}} python -m seg"
ENV = "envs/seg.yaml"

# 2. The resolved config (defaults filled) that every rule passes to `seg --config`. Rewritten only
#    when its content changes; per-job rerun triggers come from params.hash (run_config_hash).
RESOLVED = os.path.join(RESULTS, "config.resolved.yaml")
_text = yaml.safe_dump(config, sort_keys=True)
if not os.path.exists(RESOLVED) or open(RESOLVED).read() != _text:
    os.makedirs(RESULTS, exist_ok=True)
    with open(f"{RESOLVED}.tmp", "w") as f:
        f.write(_text)
    os.replace(f"{RESOLVED}.tmp", RESOLVED)


# 3. Datasets: those whose raw files are here (or downloadable) run; a missing one is skipped with
#    one message that says what is missing, where to put it and where it would come from.
def _available_datasets():
    from seg.data import availability

    out = []
    for name, entry in config["datasets"].items():
        if not entry["enabled"]:
            continue
        status, message = availability(config, name)
        if status == "missing":
            if entry["on_missing"] == "fail":
                raise WorkflowError(message)
            logger.warning(f"SKIPPING dataset {name}: {message}")
            continue
        out.append(name)
    return out


DATASETS = _available_datasets()
if not DATASETS:
    raise WorkflowError("no dataset is available: see the messages above")


def kind(dataset):
    return config["datasets"][dataset]["kind"]


def runs():
    """(dataset, variant) pairs of this run, in config order."""
    return [(d, v) for v in config["variants"] for d in variant_datasets(config, v) if d in DATASETS]


def encoder_of(variant):
    """The encoder name of an encoder model (`unet-resnet34` -> `resnet34`), else None."""
    model = config["variants"][variant]["model"]
    return model.split("-", 1)[1] if "-" in model else None


def pretrained_input(wildcards):
    """In-house pretrained encoder weights the training job needs, if the variant asks for them."""
    if config["variants"][wildcards.variant]["pretrained"] != "inhouse":
        return []
    enc = encoder_of(wildcards.variant)
    if enc is None:
        raise WorkflowError(
            f"config: variants.{wildcards.variant}.pretrained: 'inhouse' needs an encoder model "
            f"(e.g. unet-resnet34), not {config['variants'][wildcards.variant]['model']!r}"
        )
    return f"{RESULTS}/{wildcards.dataset}/pretrain/{enc}/encoder.pt"


def threshold_input(wildcards):
    """The val-chosen threshold file the test predictions need, if calibration is on."""
    if wildcards.split == "test" and config["postprocess"]["calibrate"]:
        return f"{RESULTS}/{wildcards.dataset}/{wildcards.variant}/calibration.json"
    return []


def data_dir(wildcards, input):
    """The data folder, derived from the dataset's meta.json input (`<data_dir>/<dataset>/meta.json`)."""
    return os.path.dirname(os.path.dirname(input.meta))


def dataset_hash(wildcards):
    return config_hash(config["datasets"][wildcards.dataset])


def run_hash(wildcards):
    return run_config_hash(config, wildcards.dataset, wildcards.variant)


wildcard_constraints:
    dataset="|".join(map(re.escape, config["datasets"])),
    variant="|".join(map(re.escape, config["variants"])),
    split="train|val|test|unlabeled",


def all_targets():
    targets = [f"{RESULTS}/leaderboard.csv", f"{RESULTS}/report.html"]
    for d in DATASETS:
        targets += [f"{DATA}/{d}/weights/class_weights.json", f"{DATA}/{d}/augmented"]
    return targets
