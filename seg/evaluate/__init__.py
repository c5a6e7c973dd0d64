"""seg.evaluate: a trained run applied to its dataset.

``predict`` (``seg predict``: whole-slice predictions of a split, post-processed as the run's
settings say), ``calibrate`` (``seg calibrate``: the post-processing chosen on the val split),
``score`` (``seg score``: metrics.json), ``pseudolabel`` (``seg pseudolabel``: a teacher's confident
objects as self-training labels), ``cli``. Every setting comes from the run's
:class:`seg.settings.RunSettings`.
"""
