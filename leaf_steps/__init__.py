"""LEAF: label-efficient image quality assessment, as small pipeline steps.

Each step module runs as ``python -m leaf_steps.<step>`` with explicit inputs and
outputs, and is importable for tests. Shared helpers: :mod:`leaf_steps.core.io`
(atomic Parquet with provenance), :mod:`leaf_steps.core.config` (validated config),
:mod:`leaf_steps.teachers.teacher_math` (Eq 1-5), :mod:`leaf_steps.training.losses` (Eq 6-12),
:mod:`leaf_steps.evaluation.metrics` (SRCC/PLCC/KRCC/RMSE).
"""

__version__ = "0.1.0"
