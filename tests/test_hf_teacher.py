"""The transformers teacher on tiny random-weight Qwen2-VL / InternVL: real checkpoint loading, real images.

Random weights put only a few percent of the probability on the label tokens, so the tests that
check the plumbing of scores accept any mass (``min_token_mass: 0``); the default threshold's
refusals are tested on their own.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from leaf_steps.core.errors import ConfigError, TeacherError
from leaf_steps.teachers import ImageRef, make_teacher
from leaf_steps.teachers.hf import label_token_ids, parse_spec
from leaf_steps.teachers.image_encoding import load_image as load_rgb_image
from leaf_steps.teachers.teacher_math import LEVELS, NOT_ANSWERED

PROMPTS = {
    "point": "How would you rate the overall perceptual quality of this image? "
    "Answer with exactly one word: Excellent, Good, Fair, Poor, or Bad.",
    "pair": "The first image is Image A and the second image is Image B. "
    "Which image has higher overall perceptual quality? Answer with one letter: A or B.",
}
SPEC = {
    "backend": "transformers",
    "model": "tiny:qwen2_vl",
    "device": "cpu",
    "dtype": "float32",
    "batch_size": 4,
    "min_token_mass": 0.0,
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Five photos-ish PNGs of different sizes and aspect ratios, so rows get different token counts."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    refs = []
    for i, (h, w) in enumerate([(160, 160), (120, 200), (200, 96), (64, 64), (160, 120)]):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, np.full((h, w), 40.0 * i)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 10 * i, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        refs.append(ImageRef(f"img{i}", str(path)))
    return refs


@pytest.fixture(scope="module")
def teacher(env):
    with make_teacher(SPEC, PROMPTS) as t:
        yield t


def _logliks(scores):
    return np.array([s.logliks for s in scores])


def test_points_are_finite_subdistributions(teacher, images):
    scores = teacher.score_points(images)
    assert len(scores) == len(images)
    for s in scores:
        assert s.error is None and s.missing == []
        assert len(s.logliks) == len(LEVELS) and all(math.isfinite(x) and x < 0 for x in s.logliks)
        assert 0 < s.mass <= 1
        assert sum(math.exp(x) for x in s.logliks) == pytest.approx(s.mass, rel=1e-5)
    spread = _logliks(scores).std(axis=0)
    assert (spread > 1e-3).all()  # the answer depends on the image


def test_pairs_score_two_labels_and_order_matters(teacher, images):
    a, b = images[0], images[2]
    ab, ba = teacher.score_pairs([(a, b), (b, a)])
    for s in (ab, ba):
        assert s.error is None and len(s.logliks) == 2 and all(math.isfinite(x) for x in s.logliks)
        assert 0 < s.mass <= 1 and sum(math.exp(x) for x in s.logliks) == pytest.approx(s.mass, rel=1e-5)
    assert not np.allclose(ab.logliks, ba.logliks, atol=1e-3)


def test_batch_equals_one_by_one(teacher, images):
    loaded = [[load_rgb_image(ref.path)] for ref in images[:4]]
    mask = teacher.encode(loaded, teacher.point_text)["attention_mask"]
    assert (mask == 0).any()  # the batch really is padded, so this compares padded vs unpadded rows
    batched = _logliks(teacher.score_points(images[:4]))
    single = _logliks([teacher.score_points([ref])[0] for ref in images[:4]])
    np.testing.assert_allclose(batched, single, atol=1e-4)

    pairs = [(images[0], images[1]), (images[2], images[3]), (images[3], images[4])]
    batched = _logliks(teacher.score_pairs(pairs))
    single = _logliks([teacher.score_pairs([p])[0] for p in pairs])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_deterministic_across_loads(teacher, images, env):
    first = _logliks(teacher.score_points(images))
    with make_teacher(SPEC | {"batch_size": 2}, PROMPTS) as again:
        second = _logliks(again.score_points(images))
    np.testing.assert_allclose(first, second, atol=1e-5)


def test_bad_images_are_error_rows_naming_the_file(teacher, images, tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(images[0].path, "rb").read()[:200])
    refs = [
        images[1],
        ImageRef("g", str(garbage)),
        images[2],
        ImageRef("m", str(tmp_path / "missing.png")),
        ImageRef("t", str(truncated)),
        images[3],
    ]
    scores = teacher.score_points(refs)
    for i, name in [(1, "garbage.png"), (3, "missing.png"), (4, "truncated.png")]:
        assert scores[i].error is not None and name in scores[i].error
        assert all(math.isnan(x) for x in scores[i].logliks)
    good = [scores[0], scores[2], scores[5]]
    assert all(s.error is None for s in good)
    np.testing.assert_allclose(
        _logliks(good), _logliks(teacher.score_points([images[1], images[2], images[3]])), atol=1e-4
    )
    pair = teacher.score_pairs([(images[0], ImageRef("g", str(garbage))), (images[0], images[1])])
    assert "garbage.png" in pair[0].error and pair[1].error is None


def test_image_max_side_downscales_never_upscales(tmp_path, images):
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 150), (10, 200, 30)).save(big)
    assert load_rgb_image(big, max_side=64).size == (64, 32)
    assert load_rgb_image(big).size == (300, 150)
    assert load_rgb_image(images[3].path, max_side=128).size == (64, 64)  # small stays small
    gray = tmp_path / "gray.png"
    Image.new("L", (20, 20), 128).save(gray)
    assert load_rgb_image(gray).mode == "RGB"


def test_label_ids_of_tiny_tokenizer_cover_spelling_variants(teacher):
    tok = teacher.processor.tokenizer
    good = teacher.point_ids["Good"]
    for variant in ("Good", " Good", "good", "GOOD"):
        assert tok.encode(variant, add_special_tokens=False)[0] in good
    all_ids = [i for ids in teacher.point_ids.values() for i in ids]
    assert len(all_ids) == len(set(all_ids))


def _bytes_only_tokenizer():
    """A byte-level BPE with no merges: every word's first token is its first letter."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        ["Good Great"], trainers.BpeTrainer(vocab_size=len(alphabet), initial_alphabet=alphabet, show_progress=False)
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_first_token_collision_raises_naming_model_and_labels(env):
    tok = _bytes_only_tokenizer()
    with pytest.raises(TeacherError, match=r"some/model: labels 'Good' and 'Great' share the first token 'G'"):
        label_token_ids(tok, ["Good", "Great"], "some/model")
    ids = label_token_ids(tok, LEVELS, "some/model")  # the five levels start with distinct letters
    assert {label: sorted(tok.convert_ids_to_tokens(v)) for label, v in ids.items()}["Excellent"] == ["E", "e"]


def test_label_the_tokenizer_cannot_spell_raises(env):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(["Excellent", "Good", "Poor", "Bad"])}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    with pytest.raises(TeacherError, match="cannot spell label 'Fair'"):
        label_token_ids(hf, LEVELS, "word/level")


@pytest.mark.parametrize(
    "change, key",
    [
        ({"colour": "red"}, "teachers.*.colour"),
        ({"dtype": "float8"}, "teachers.*.dtype"),
        ({"device": "tpu"}, "teachers.*.device"),
        ({"batch_size": 0}, "teachers.*.batch_size"),
        ({"batch_size": True}, "teachers.*.batch_size"),
        ({"image_max_side": 8}, "teachers.*.image_max_side"),
        ({"trust_remote_code": "yes"}, "teachers.*.trust_remote_code"),
        ({"missing_token_policy": "guess"}, "teachers.*.missing_token_policy"),
        ({"min_token_mass": -0.1}, "teachers.*.min_token_mass"),
        ({"enable_thinking": "off"}, "teachers.*.enable_thinking"),
        ({"visual_budget": {"max_tiles": 1, "min_pixels": 4}}, "teachers.*.visual_budget.min_pixels"),
        ({"model": ""}, "teachers.*.model"),
        ({"name": "tq", "colour": "red"}, "teachers.tq.colour"),
    ],
)
def test_bad_spec_is_config_error_naming_the_key(change, key):
    with pytest.raises(ConfigError) as err:
        make_teacher(SPEC | change, PROMPTS)  # validation happens before any model is loaded
    assert str(err.value).startswith(key + ":")


def test_spec_defaults():
    s = parse_spec({"backend": "transformers", "model": "org/model"})
    assert (s.device, s.dtype, s.batch_size, s.image_max_side, s.trust_remote_code) == ("auto", "auto", 8, None, False)
    assert (s.visual_budget, s.enable_thinking, s.min_token_mass) == (None, False, 0.5)


def test_unloadable_model_is_teacher_error(env, tmp_path):
    teacher = make_teacher(SPEC | {"model": str(tmp_path / "no-such-model")}, PROMPTS)  # loads nothing yet
    assert teacher.describe()["score_settings"]["model"].endswith("no-such-model")  # the store key needs no model
    with pytest.raises(TeacherError, match="no-such-model"):
        teacher.setup()
    with pytest.raises(TeacherError, match="no-such-model"), teacher:
        pass
    with pytest.raises(ConfigError, match="prompts.pair"):
        make_teacher(SPEC, {"point": PROMPTS["point"]})


def test_describe_is_json_provenance(teacher):
    info = json.loads(json.dumps(teacher.describe()))
    settings = info["score_settings"]
    assert info["backend"] == "transformers" and settings["model"] == "tiny:qwen2_vl"
    assert settings["dtype"] == "float32" and info["operational"] == {"device": "cpu", "batch_size": 4}
    assert settings["image_bytes"] == "pixels" and settings["enable_thinking"] is False
    assert settings["visual_budget"] is None and info["acceptance"] == {"min_token_mass": 0.0}
    assert info["template_reads_enable_thinking"] is False  # the tiny Qwen2-VL template has no thinking mode
    assert info["model_class"] == "Qwen2VLForConditionalGeneration"
    assert set(info["label_token_ids"]["point"]) == set(LEVELS)
    assert info["label_token_ids"]["pair"]["A"]["tokens"][0] == "A"


def test_rows_say_the_model_saw_decoded_pixels(teacher, images):
    assert [s.image_bytes for s in teacher.score_points(images[:2])] == [["pixels"], ["pixels"]]
    assert teacher.score_pairs([(images[0], images[1])])[0].image_bytes == ["pixels", "pixels"]


def test_low_label_mass_is_an_error_row_naming_the_tokens(env, images):
    # Random weights: the label tokens hold a few percent of the probability (see the module doc).
    with make_teacher(SPEC | {"min_token_mass": 0.5}, PROMPTS) as strict:
        rows = strict.score_points(images[:3])
        pair = strict.score_pairs([(images[0], images[1])])[0]
        tokenizer = strict.processor.tokenizer
    for row in [*rows, pair]:
        assert (
            row.error.startswith(NOT_ANSWERED) and f"answer-token mass {row.mass:.3g} < min_token_mass 0.5" in row.error
        )
        assert 0 < row.mass < 0.5 and all(math.isnan(x) for x in row.logliks)
        assert len(row.top) == 5 and row.top[0][1] >= row.top[-1][1]
        assert repr(row.top[0][0]) in row.error  # the decoded token the model preferred
        assert row.top[0][0] == tokenizer.decode(tokenizer.encode(row.top[0][0], add_special_tokens=False))


@pytest.mark.parametrize(
    ("arch", "budget", "field"),
    [
        ("internvl", {"max_tiles": 1}, "pixel_values"),  # 4 tiles + thumbnail -> 1 tile
        ("qwen2_vl", {"max_pixels": 56 * 56}, "image_grid_thw"),  # 112x112 px cap -> 56x56
    ],
)
def test_visual_budget_reaches_the_processor_and_cuts_image_tokens(env, images, arch, budget, field):
    spec = SPEC | {"model": f"tiny:{arch}"}
    big = [[load_rgb_image(images[0].path)]]  # 160 x 160
    with make_teacher(spec, PROMPTS) as default, make_teacher(spec | {"visual_budget": budget}, PROMPTS) as cut:
        full, small = default.encode(big, default.point_text), cut.encode(big, cut.point_text)
        image_token = default.model.config.image_token_id
        n_full, n_small = int((full["input_ids"] == image_token).sum()), int((small["input_ids"] == image_token).sum())
        assert n_small < n_full, (n_small, n_full)
        if arch == "internvl":
            assert (full[field].shape[0], small[field].shape[0]) == (5, 1) and (n_full, n_small) == (20, 4)
        else:
            assert small[field].prod() < full[field].prod()
        # The cut view is what the model is scored on: its answer differs from the default view's.
        assert not np.allclose(
            default.score_points(images[:1])[0].logliks, cut.score_points(images[:1])[0].logliks, atol=1e-4
        )
        assert cut.describe()["processor_images_kwargs"] == (
            {"max_patches": 1} if arch == "internvl" else {"size": {"longest_edge": 3136, "shortest_edge": 784}}
        )


def test_budget_of_the_wrong_kind_is_a_config_error(env):
    # The processor decides which budget fits: checked when the model is set up.
    with pytest.raises(
        ConfigError, match=r"teachers\.q\.visual_budget\.max_tiles: .*Qwen2VLImageProcessor.*max_pixels"
    ):
        make_teacher(SPEC | {"name": "q", "visual_budget": {"max_tiles": 2}}, PROMPTS).setup()
    with pytest.raises(
        ConfigError, match=r"teachers\.i\.visual_budget\.max_pixels: .*GotOcr2ImageProcessor.*max_tiles"
    ):
        make_teacher(
            SPEC | {"name": "i", "model": "tiny:internvl", "visual_budget": {"max_pixels": 5000}}, PROMPTS
        ).setup()


QWEN3_STYLE_TEMPLATE = (  # the part of Qwen3's chat template that implements the non-thinking mode
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<|vision_start|><|image_pad|>"
    "<|vision_end|>{% else %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


@pytest.mark.parametrize(("thinking", "empty_block"), [(False, True), (None, False), (True, False)])
def test_thinking_mode_reaches_the_chat_template(env, thinking, empty_block):
    with make_teacher(SPEC | {"enable_thinking": thinking}, PROMPTS) as t:
        t.processor.chat_template = QWEN3_STYLE_TEMPLATE
        text = t._chat_text(PROMPTS["point"], n_images=1)
        assert t.describe()["template_reads_enable_thinking"] is True
    # Non-thinking mode: the answer position comes right after an empty thinking block.
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") is empty_block
