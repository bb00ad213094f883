"""Running a trained student on new images: ``leaf predict`` and the exports.

- :mod:`~leaf_steps.inference.inputs`: what to score (files, folders, CSV/text lists, manifests);
- :mod:`~leaf_steps.inference.models`: a student from a LEAF checkpoint, a timm export folder
  or an ONNX file, with its eval transform, output units and id;
- :mod:`~leaf_steps.inference.batches`: the loader that turns files into uint8 batches and
  unreadable files into error rows;
- :mod:`~leaf_steps.inference.resume`: results kept in atomic part files, so a killed run
  resumes without redoing finished images;
- :mod:`~leaf_steps.inference.export`: the timm-native folder, the ONNX file, the model card.

The eval transform and the torch forward pass are the training code's own
(:mod:`leaf_steps.training.transforms`, :mod:`leaf_steps.training.scoring`).
"""
