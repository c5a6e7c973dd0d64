"""seg.settings: everything a run is told, resolved once.

- :mod:`seg.settings.checks`    :func:`load_config` / :func:`validate_config`: the config file
  checked against the schema (:mod:`seg.config`) and the registered kinds and targets
- :mod:`seg.settings.plan`      the plan from the data: scale-dependent settings from the fingerprint
- :mod:`seg.settings.run`       :class:`RunSettings`: config, then plan, then target, then calibration,
  per (dataset, variant): what every stage asks
- :mod:`seg.settings.calibration`  reading what ``seg calibrate`` chose
- :mod:`seg.settings.identity`  the hashes that name a run and each workflow step
- :mod:`seg.settings.init_writer`  ``seg init``: a config written for a folder of images and masks
- :mod:`seg.commands.settings`       ``seg init``, ``seg plan``

Floors: above the dataset kinds, the targets, the data and the config; below the stages (train,
evaluate, package, export, report) that ask it.
"""

from __future__ import annotations

from seg.settings.checks import load_config, validate_config
from seg.settings.identity import run_config_hash, step_hash, step_settings
from seg.settings.run import POSTPROCESS_KEYS, Postprocess, RunSettings, run_settings

__all__ = ["POSTPROCESS_KEYS", "Postprocess", "RunSettings", "load_config", "run_config_hash", "run_settings",
           "step_hash", "step_settings", "validate_config"]
