"""Library code of the student stages shared by several steps (stage-1 checkpoint selection)."""
