"""seg: U-Net and its modern variants on ISBI 2012 and Cell Tracking Challenge data.

Run `snakemake --cores 8` (default config) or `snakemake --cores 2 --configfile configs/quick.yaml`.
Every rule calls one `seg` command; see README.md.
"""

from snakemake.utils import min_version

min_version("9.0")


# The default config; a --configfile on the command line replaces it (rather than being merged
# into it), so `--configfile configs/quick.yaml` runs exactly the quick config.
if not workflow.overwrite_configfiles:

    configfile: "configs/config.yaml"



report: "pipeline/report/workflow.rst"


include: "pipeline/common.smk"
include: "pipeline/ingest.smk"
include: "pipeline/targets.smk"
include: "pipeline/models.smk"
include: "pipeline/train.smk"
include: "pipeline/predict.smk"
include: "pipeline/report.smk"
include: "pipeline/export.smk"


rule all:
    input:
        all_targets(),
    default_target: True
