"""LEAF: label-efficient image quality assessment, as small pipeline steps.

The top-level modules are the DAG's steps, one per rule of the same name: each runs as
``python -m leaf_steps.<step>`` with explicit inputs and outputs, and is importable for tests.
No step imports another. The library lives in subpackages: :mod:`leaf_steps.core` (errors, config,
atomic Parquet with provenance, code hashes, the ``leaf`` command), :mod:`leaf_steps.datasets`,
:mod:`leaf_steps.images` (the one decoder), :mod:`leaf_steps.teachers` (backends, Eq 1-5, the
scoring driver), :mod:`leaf_steps.training` (the student, Eq 6-12), :mod:`leaf_steps.evaluation`
(the one SRCC/PLCC, metrics, figures), :mod:`leaf_steps.inference` (``leaf predict``, exports)
and :mod:`leaf_steps.tools` (the commands no rule runs).
"""

__version__ = "0.1.0"
