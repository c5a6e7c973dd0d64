"""seg.transforms: what training does to a slice besides its target: the U-Net paper's border-weight
maps (:mod:`seg.transforms.weights`) and elastic-deformation augmentation
(:mod:`seg.transforms.augment`); ``seg weights`` and ``seg augment`` (:mod:`seg.commands.transforms`).
"""
