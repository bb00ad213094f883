"""Teacher backends behind one interface (see :mod:`leaf_steps.teachers.base`)."""

from leaf_steps.teachers.base import ImageRef, Teacher, make_teacher

__all__ = ["ImageRef", "Teacher", "make_teacher"]
