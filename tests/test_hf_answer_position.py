"""The transformers teacher reads the answer at the right position.

Oracle: the same checkpoint loaded afresh, one UNPADDED forward pass per item over the chat
``[image(s), prompt]`` rendered with the model's own template and ``add_generation_prompt``,
full logits (no ``logits_to_keep``), ``log_softmax`` at the last position, then the log of the
summed probability of each label's tokens. The backend's batched, left-padded answers must equal
it. The batched-vs-single test in test_hf_teacher.py cannot see a position error (both would be
wrong the same way); this one can, and checks that it can (the position before differs).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from leaf_steps.teachers import ImageRef, make_teacher

PROMPTS = {
    "point": "How would you rate the overall perceptual quality of this image? "
    "Answer with exactly one word: Excellent, Good, Fair, Poor, or Bad.",
    "pair": "The first image is Image A and the second image is Image B. "
    "Which image has higher overall perceptual quality? Answer with one letter: A or B.",
}
# min_token_mass 0: random weights put little mass on the labels; this test compares log-likelihoods, not acceptance.
SPEC = {
    "backend": "transformers",
    "model": "tiny:qwen2_vl",
    "device": "cpu",
    "dtype": "float32",
    "batch_size": 3,
    "min_token_mass": 0.0,
}


@pytest.fixture(scope="module")
def teacher():
    with make_teacher(SPEC, PROMPTS) as t:  # the tiny checkpoint comes from the session's cache (conftest.py)
        yield t


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[ImageRef]:
    """Different sizes, so the backend's batches are padded to different lengths."""
    folder = tmp_path_factory.mktemp("answer_position")
    rng = np.random.default_rng(7)
    refs = []
    for i, (h, w) in enumerate([(96, 96), (64, 128), (128, 56), (48, 48)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = folder / f"im{i}.png"
        Image.fromarray(pixels).save(path)
        refs.append(ImageRef(f"im{i}", str(path)))
    return refs


class Reference:
    """The checkpoint the teacher resolved, loaded again with plain transformers calls."""

    def __init__(self, model_dir: str):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()

    @torch.no_grad()
    def answer_logprobs(self, prompt: str, paths: list[str], position: int = -1) -> torch.Tensor:
        messages = [
            {"role": "user", "content": [*({"type": "image"} for _ in paths), {"type": "text", "text": prompt}]}
        ]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        pictures = [Image.open(p).convert("RGB") for p in paths]
        inputs = self.processor(text=[text], images=pictures, return_tensors="pt")
        assert bool(inputs["attention_mask"].all())  # one row: nothing is padded
        logits = self.model(**inputs).logits[0, position]
        return torch.log_softmax(logits.double(), dim=-1)


@pytest.fixture(scope="module")
def reference(teacher) -> Reference:
    return Reference(teacher.model_path)


def label_logliks(logprobs: torch.Tensor, label_ids: dict[str, list[int]]) -> list[float]:
    return [float(torch.logsumexp(logprobs[ids], dim=0)) for ids in label_ids.values()]


def test_point_answers_equal_an_unpadded_forward_pass(teacher, reference, images):
    got = teacher.score_points(images)  # batch_size 3: a padded batch of three, then one
    for ref, scores in zip(images, got):
        logprobs = reference.answer_logprobs(PROMPTS["point"], [ref.path])
        want = label_logliks(logprobs, teacher.point_ids)
        np.testing.assert_allclose(scores.logliks, want, atol=2e-4, err_msg=ref.image_id)
        mass = float(torch.logsumexp(logprobs[[i for v in teacher.point_ids.values() for i in v]], 0).exp())
        assert scores.mass == pytest.approx(mass, abs=2e-4)
        # The oracle can tell positions apart: the token before the answer predicts something else.
        before = label_logliks(reference.answer_logprobs(PROMPTS["point"], [ref.path], position=-2), teacher.point_ids)
        assert np.abs(np.array(before) - np.array(want)).max() > 1e-2


def test_pair_answers_equal_an_unpadded_forward_pass(teacher, reference, images):
    pairs = [(images[0], images[1]), (images[2], images[3]), (images[3], images[0])]
    got = teacher.score_pairs(pairs)
    for (a, b), scores in zip(pairs, got):
        want = label_logliks(reference.answer_logprobs(PROMPTS["pair"], [a.path, b.path]), teacher.pair_ids)
        np.testing.assert_allclose(scores.logliks, want, atol=2e-4, err_msg=f"{a.image_id}|{b.image_id}")


def test_label_ids_are_the_first_tokens_of_the_label_words(teacher, reference):
    """The oracle above reuses the teacher's label ids; they are checked here against the tokenizer."""
    tok = reference.processor.tokenizer
    for label, ids in {**teacher.point_ids, **teacher.pair_ids}.items():
        firsts = {tok.encode(v, add_special_tokens=False)[0] for v in (label, " " + label, label.lower())}
        assert firsts <= set(ids), label
        assert all(tok.decode([i]).strip().casefold().startswith(label[0].casefold()) for i in ids), label
