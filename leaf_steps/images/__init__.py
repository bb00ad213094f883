"""Images as every stage sees them: one decoder for the dataset check, the teachers, the student and prediction.

See :mod:`leaf_steps.images.decode` for the rules (orientation, bit depth, alpha, palettes,
animation, decompression bombs).
"""

from leaf_steps.images.decode import (
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    load_rgb,
    probe,
    sendable_as_is,
)

__all__ = ["DEFAULT_MAX_PIXELS", "ImageInfo", "load_rgb", "probe", "sendable_as_is"]
