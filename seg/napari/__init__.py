"""seg.napari: the napari plugin (``pip install -e .[napari]``; manifest ``seg/napari/napari.yaml``).

- :mod:`seg.napari.widgets`  the Segment, Teach and Fine-tune dock widgets (the only module that
  imports napari and Qt; thin wiring over the modules below)
- :mod:`seg.napari.run`      the long jobs (segment a layer, fine-tune and segment again) as plain
  generators the widgets run in thread workers
- :mod:`seg.napari.pairs`    teaching pairs: which cells the user touched, sparse / dense masks,
  saving ``<name>.tif`` + ``<name>_masks.tif`` without overwriting, the folder's ``dataset.json``
- :mod:`seg.napari.reader`   the project's outputs (``*_RES/``, ``*_prob.tif``, ``*_seg.tif``,
  ``*_mask.tif``, ``seg segment`` folders) as layer data
- :mod:`seg.napari.sample`   ``seg synth`` frames as sample data

Importing this package imports neither napari nor Qt: everything but the widgets runs and is
tested without them.
"""
