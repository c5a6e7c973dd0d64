# Validation, the resolved config file every `seg` command reads, dataset availability, target lists.
# Logic lives in the tested `seg` package; this file only wires it into the workflow. Nothing here
# writes a file while the workflow is parsed (`-n`, `--lint` and `--report` leave the tree as it is).

import copy
import os
import re
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from seg.config import variant_datasets, write_resolved_config
from seg.settings import step_hash, validate_config
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
# Every rule runs `<python> -m seg <command>` with the package from this repository. <python> is the
# interpreter running Snakemake itself (so `.venv/bin/snakemake ...` works without activating the
# venv, also in SLURM jobs, which start that same interpreter), or the env's own `python` when a
# conda env is requested (--sdm conda: pipeline/envs/seg.yaml).
_PYTHON = (
    "python"
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    else shlex.quote(sys.executable)
)
SEG = f"PYTHONPATH={shlex.quote(workflow.basedir)}${{PYTHONPATH:+:$PYTHONPATH}} {_PYTHON} -m seg"
ENV = "envs/seg.yaml"

# 2. The resolved config (defaults filled) that every rule passes to `seg --config`. Written when
#    the workflow starts executing jobs (not in dry runs, lint or report), and only if its content
#    changed; it is not an input of any rule.
#
#    A job's identity is its params.hash (the hash of the config settings that step reads,
#    seg.settings.step_settings, see step_hash_of below) and its input files, never the path of a
#    config file. Snakemake 9 reruns a job whose output is missing or older than an input, or whose
#    recorded params, set of input files, code (for a shell rule the command's text as written,
#    before formatting) or software env changed since it ran. It records no param computed by a
#    function that takes the job's input, output, threads or resources: those are "derived" from
#    the files (snakemake.rules.Rule._is_deriving_function, persistence._params). So the rules'
#    params.cfg is resolved_config below, such a function, and ingest derives its output folder
#    from its output: two configs with their own results_dir and one data_dir share the ingest,
#    weights and augment jobs where the settings those read agree, and running the second leaves
#    the first one's results up to date (tests/test_workflow.py). Each job still reads the
#    resolved config of the run that started it.
RESOLVED = os.path.join(RESULTS, "config.resolved.yaml")


def resolved_config(wildcards, output):
    """A rule's params.cfg: RESOLVED, the path `seg --config` reads. It takes `output` (unused) so
    that Snakemake does not record it among the job's params (section 2): the path lies in
    results_dir and would make every job of a second config with its own results_dir look changed."""
    return RESOLVED


onstart:
    write_resolved_config(config, RESOLVED)


# 3. Datasets: those whose raw files are here (or downloadable) run; a missing one is skipped with
#    one message that says what is missing, where to put it and where it would come from.
def _available_datasets():
    from seg.kinds.sources import availability

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


def runs():
    """(dataset, variant) pairs of this run, in config order."""
    return [(d, v) for v in config["variants"] for d in variant_datasets(config, v) if d in DATASETS]


def dataset_variants(dataset):
    """Variants of this run on `dataset`, in config order."""
    return [v for d, v in runs() if d == dataset]


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


def init_input(wildcards):
    """The model package a variant's training starts from (``init:``), if it has one: its
    package.json (a package folder) or the zip, so that a re-packaged start retrains the row."""
    init = config["variants"][wildcards.variant].get("init")
    if not init:
        return []
    return init if str(init).endswith(".zip") else f"{init}/package.json"


def pseudo_input(wildcards):
    """The self-training labels a variant with ``self_training`` trains on (the pseudolabel job's)."""
    if not config["variants"][wildcards.variant].get("self_training"):
        return []
    return f"{RESULTS}/{wildcards.dataset}/{wildcards.variant}/pseudo"


def teacher_inputs(wildcards):
    """The teacher's files the pseudolabel job reads (its summary, written after the checkpoint,
    and with calibration on its val-chosen post-processing)."""
    teacher = config["variants"][wildcards.variant]["self_training"]["teacher"]
    run = f"{RESULTS}/{wildcards.dataset}/{teacher}"
    return [f"{run}/train_summary.json"] + ([f"{run}/calibration.json"] if config["postprocess"]["calibrate"] else [])


def threshold_input(wildcards):
    """The val-chosen threshold file the test predictions need, if calibration is on."""
    if wildcards.split == "test" and config["postprocess"]["calibrate"]:
        return f"{RESULTS}/{wildcards.dataset}/{wildcards.variant}/calibration.json"
    return []


def data_dir(wildcards, input):
    """The data folder, derived from the dataset's meta.json input (`<data_dir>/<dataset>/meta.json`)."""
    return os.path.dirname(os.path.dirname(input.meta))


def step_hash_of(step):
    """A rule's params.hash: the hash of the config settings `step` reads besides its input files
    (seg.settings.step_settings), so a job reruns exactly when one of them changes. With the input
    files it is the job's identity: no param Snakemake records holds a config file's path (section 2)."""

    def _hash(wildcards):
        return step_hash(
            config, step, getattr(wildcards, "dataset", None), getattr(wildcards, "variant", None)
        )

    return _hash


wildcard_constraints:
    dataset="|".join(map(re.escape, config["datasets"])),
    variant="|".join(map(re.escape, config["variants"])),
    split="train|val|test|unlabeled",


def all_targets():
    """The default run: leaderboard and report, weight-map and augmentation previews, and per dataset
    the best row's model package with its TorchScript, ONNX and bioimage.io exports. Segmenting every
    unannotated image is the separate target `segment_all` (it would not fit the default run's hour)."""
    targets = [f"{RESULTS}/leaderboard.csv", f"{RESULTS}/report.html"]
    for d in DATASETS:
        targets += [f"{DATA}/{d}/weights/class_weights.json", f"{DATA}/{d}/augmented"]
        models = f"{RESULTS}/models/{d}"
        targets += [f"{models}/package", f"{models}/torchscript", f"{models}/onnx", f"{models}/bioimageio.zip"]
    return targets
