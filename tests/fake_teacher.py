"""An in-process teacher for driver tests: deterministic answers, injectable failures and kills."""

import math
import zlib

from leaf_steps.teachers.base import Teacher
from leaf_steps.teachers.teacher_math import LEVELS, PAIR_LABELS, LabelScores


class FakeTeacher(Teacher):
    backend = "fake"
    calls: list[list[str]] = []  # ids per call, shared so tests can inspect after the context closes
    fail_ids: set[str] = set()
    kill_after_calls: int | None = None
    # Added to the logit of whichever image is shown first ("A"): a teacher that favours position A.
    position_bias: float = 0.0

    @staticmethod
    def quality(image_id: str) -> float:
        return (zlib.crc32(image_id.encode()) % 1000) / 1000.0

    def _tick(self, ids):
        FakeTeacher.calls.append(list(ids))
        if FakeTeacher.kill_after_calls is not None and len(FakeTeacher.calls) > FakeTeacher.kill_after_calls:
            raise KeyboardInterrupt("simulated kill")

    def answer_points(self, images):
        self._tick([im.image_id for im in images])
        out = []
        for im in images:
            if im.image_id in FakeTeacher.fail_ids:
                out.append(LabelScores.failed(LEVELS, f"{im.path}: simulated failure"))
                continue
            q = self.quality(im.image_id) * 4  # 0..4 on the Bad..Excellent axis
            out.append(LabelScores([-((q - c) ** 2) for c in (4, 3, 2, 1, 0)], mass=0.9))
        return out

    def answer_pairs(self, pairs):
        self._tick([f"{a.image_id}|{b.image_id}" for a, b in pairs])
        out = []
        for a, b in pairs:
            failing = [im.path for im in (a, b) if im.image_id in FakeTeacher.fail_ids]
            if failing:
                out.append(LabelScores.failed(PAIR_LABELS, f"{failing[0]}: simulated failure"))
                continue
            d = 4 * (self.quality(a.image_id) - self.quality(b.image_id)) + FakeTeacher.position_bias
            out.append(LabelScores([-math.log1p(math.exp(-d)), -math.log1p(math.exp(d))], mass=1.0))
        return out
