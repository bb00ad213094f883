"""What the MLLM teacher sees and what it answered, checked on the bytes a loopback vLLM server receives.

* Image transport: the file's own bytes when they show the model the pixels every stage decodes,
  a lossless PNG of those pixels otherwise, a JPEG re-encode only when asked; the rows say which.
* Visual-token budget and thinking mode reach every request body.
* An answer that is not a label (a thinking block, a chatty first word) is an error row naming its
  mass and tokens, never a score read off the tail of the top K; a shard of them fails with a
  message that says what to change.
"""

from __future__ import annotations

import io
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from skimage import data as skdata

from fake_vllm_server import Behaviour, FakeVllmServer
from leaf_steps.core.errors import TeacherError
from leaf_steps.core.io import read_provenance
from leaf_steps.images.decode import EXIF_ORIENTATION
from leaf_steps.teachers import image_encoding
from leaf_steps.teachers.base import ImageRef, make_teacher
from leaf_steps.teachers.image_encoding import load_image
from leaf_steps.teachers.teacher_math import NOT_ANSWERED
from scoring_helpers import pairs_rows, points_rows, write_image_list
from test_images import png16

PROMPTS = {
    "point": "How good is this image? Answer Excellent, Good, Fair, Poor, or Bad.",
    "pair": "Image A first, then Image B. Which is better? Answer A or B.",
}
MODEL = "fake/vlm"
MAX_SIDE = 160
# name -> how the default ("auto") transport must send it
EXPECTED_KIND = {
    "small.jpg": "original",
    "gray.jpg": "original",
    "small.png": "original",
    "small.webp": "original",
    "big.jpg": "png",
    "rotated.jpg": "png",
    "gray16.png": "png",
    "rgba.png": "png",
    "palette.gif": "png",
    "cmyk.jpg": "png",
}
MIME = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real small files of the kinds users have; MAX_SIDE decides which ones must be downscaled."""
    d = tmp_path_factory.mktemp("photos")
    cat = Image.fromarray(skdata.chelsea())  # 451 x 300
    small = cat.resize((150, 100))
    small.save(d / "small.jpg", quality=88)
    small.convert("L").save(d / "gray.jpg", quality=88)
    small.save(d / "small.png")
    small.save(d / "small.webp", lossless=True)
    cat.save(d / "big.jpg", quality=88)  # 451 px > MAX_SIDE: downscaled
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    small.save(d / "rotated.jpg", quality=88, exif=exif.tobytes())
    png16(d / "gray16.png", np.random.default_rng(0).integers(0, 65536, size=(90, 120)).astype(np.uint16), 0)
    alpha = np.linspace(0, 255, 150, dtype=np.uint8)[None, :, None].repeat(100, axis=0)
    Image.fromarray(np.concatenate([np.asarray(small), alpha], axis=-1), "RGBA").save(d / "rgba.png")
    small.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(d / "palette.gif")
    small.convert("CMYK").save(d / "cmyk.jpg", quality=92)
    return {name: d / name for name in EXPECTED_KIND}


@contextmanager
def fake(**behaviour):
    behaviour.setdefault("image_limit", 2)
    model = behaviour.pop("model", MODEL)
    with FakeVllmServer(model, Behaviour(**behaviour)) as server:
        yield server


def spec(server: FakeVllmServer, **extra) -> dict:
    # One request at a time: the fake keeps the last request's images.
    return {
        "backend": "vllm",
        "name": "t",
        "model": server.stats()["model"],
        "base_url": server.base_url,
        "backoff_s": 0.01,
        "request_timeout_s": 5.0,
        "max_concurrency": 1,
        "image_max_side": MAX_SIDE,
        **extra,
    }


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def manifest_of(paths: dict[str, Path], tmp_path: Path) -> Path:
    """The image list (image_id, path, sha256) of ``paths``, as the dataset stage writes it."""
    df = pl.DataFrame({"image_id": list(paths), "path": [str(p) for p in paths.values()]})
    return write_image_list(df, tmp_path / "images.parquet")


# ---------------------------------------------------------------------------
# What the teacher sees


def test_auto_sends_original_bytes_or_a_lossless_png_of_the_decoded_pixels(photos):
    image_encoding.clear_cache()
    with fake() as server, make_teacher(spec(server), PROMPTS) as teacher:
        for name, path in photos.items():
            row = teacher.score_points([ImageRef(name, str(path))])[0]
            [(mime, data)] = server.last_images()
            assert row.error is None, (name, row.error)
            assert row.image_bytes == [EXPECTED_KIND[name]], name
            if EXPECTED_KIND[name] == "original":
                assert data == path.read_bytes() and mime == MIME[path.suffix], name  # byte for byte
            else:
                # Lossless: the server decodes exactly the pixels of the shared decoder (upright, 8-bit,
                # alpha on white, downscaled to MAX_SIDE), with no compression artifact added.
                assert mime == "image/png" and data[:8] == b"\x89PNG\r\n\x1a\n", name
                assert np.array_equal(decoded(data), np.asarray(load_image(path, MAX_SIDE))), name
    assert load_image(photos["big.jpg"], MAX_SIDE).size == (160, 106)
    assert load_image(photos["rotated.jpg"], MAX_SIDE).size == (100, 150)


def test_original_bytes_decode_to_the_shared_decoders_pixels(photos):
    # Why sending the file is safe: the server's decoder sees what every other stage sees.
    for name, kind in EXPECTED_KIND.items():
        if kind == "original":
            path = photos[name]
            assert np.array_equal(decoded(path.read_bytes()), np.asarray(load_image(path, MAX_SIDE))), name


@pytest.mark.parametrize("transport", ["png", "jpeg"])
def test_explicit_transports_re_encode_every_image(photos, transport):
    image_encoding.clear_cache()
    with fake() as server, make_teacher(spec(server, image_transport=transport, image_quality=70), PROMPTS) as t:
        for name in ("small.jpg", "big.jpg", "rgba.png"):
            row = t.score_points([ImageRef(name, str(photos[name]))])[0]
            [(mime, data)] = server.last_images()
            assert row.error is None and row.image_bytes == [transport]
            assert mime == f"image/{transport}" and data != photos[name].read_bytes()
            want = np.asarray(load_image(photos[name], MAX_SIDE))
            got = decoded(data)
            if transport == "png":
                assert np.array_equal(got, want)
            else:  # lossy: same size, close pixels, not equal ones
                assert got.shape == want.shape and 0 < np.abs(got.astype(int) - want).mean() < 12
        described = t.describe()["score_settings"]["image"]
    assert described == (
        {"max_side": MAX_SIDE, "transport": "jpeg", "quality": 70}
        if transport == "jpeg"
        else {"max_side": MAX_SIDE, "transport": "png"}
    )


def test_rows_record_how_each_image_was_sent(photos, tmp_path):
    manifest = manifest_of(photos, tmp_path)
    scoring = {"batch_size": 4, "max_error_fraction": 0.0}
    with fake() as server:
        points = points_rows(manifest, spec(server, max_concurrency=4), PROMPTS, scoring, tmp_path, teacher_name="t")
        pairs_path = tmp_path / "pairs.parquet"
        pl.DataFrame(
            {"pair_id": [0, 1], "a_id": ["small.jpg", "rgba.png"], "b_id": ["big.jpg", "small.webp"]}
        ).write_parquet(pairs_path)
        pairs = pairs_rows(pairs_path, manifest, spec(server), PROMPTS, scoring, tmp_path, teacher_name="t")
    assert dict(points.select("image_id", "image_bytes").iter_rows()) == EXPECTED_KIND
    assert pairs.select("image_bytes_a", "image_bytes_b").rows() == [("original", "png"), ("png", "original")]
    info = read_provenance(tmp_path / "points.parquet")["teacher_info"]
    assert info["score_settings"]["image"] == {"max_side": MAX_SIDE, "transport": "auto"}


# ---------------------------------------------------------------------------
# The view's budget and the thinking mode reach the request


@pytest.mark.parametrize(
    ("model", "budget", "sent"),
    [
        ("OpenGVLab/InternVL3_5-8B", {"max_tiles": 1}, {"max_dynamic_patch": 1}),
        ("OpenGVLab/InternVL3_5-8B-HF", {"max_tiles": 4}, {"max_patches": 4}),
        (
            "Qwen/Qwen3-VL-8B-Instruct",
            {"max_pixels": 401408},
            {"size": {"longest_edge": 401408, "shortest_edge": 65536}},
        ),
        (
            "Qwen/Qwen2.5-VL-7B-Instruct",
            {"max_pixels": 200704, "min_pixels": 12544},
            {"size": {"longest_edge": 200704, "shortest_edge": 12544}},
        ),
    ],
)
def test_visual_budget_reaches_the_request_body(photos, model, budget, sent):
    with fake(model=model) as server:
        with make_teacher(spec(server, visual_budget=budget), PROMPTS) as teacher:
            assert teacher.score_points([ImageRef("s", str(photos["small.jpg"]))])[0].error is None
            body = server.stats()["last_request"]
            described = teacher.describe()["score_settings"]
        assert body["mm_processor_kwargs"] == sent
        assert described["visual_budget"] == budget and described["request_extras"]["mm_processor_kwargs"] == sent
        with make_teacher(spec(server), PROMPTS) as default:  # no budget: nothing sent, the model decides
            default.score_points([ImageRef("s", str(photos["small.jpg"]))])
            assert "mm_processor_kwargs" not in server.stats()["last_request"]


def test_thinking_mode_is_off_per_request_and_extra_kwargs_merge(photos):
    ref = ImageRef("s", str(photos["small.jpg"]))
    with fake() as server:
        with make_teacher(spec(server), PROMPTS) as teacher:
            teacher.score_points([ref])
            assert server.stats()["last_request"]["chat_template_kwargs"] == {"enable_thinking": False}
        extra = {"chat_template_kwargs": {"add_vision_id": True}, "mm_processor_kwargs": {"do_pan_and_scan": False}}
        with make_teacher(spec(server, extra_body=extra, visual_budget={"max_tiles": 2}), PROMPTS) as teacher:
            teacher.score_points([ref])
            body = server.stats()["last_request"]
        assert body["chat_template_kwargs"] == {"add_vision_id": True, "enable_thinking": False}
        assert body["mm_processor_kwargs"] == {"do_pan_and_scan": False, "max_dynamic_patch": 2}
        with make_teacher(spec(server, enable_thinking=None), PROMPTS) as teacher:  # null: the template's default
            teacher.score_points([ref])
            assert "chat_template_kwargs" not in server.stats()["last_request"]


def test_score_settings_hash_follows_what_changes_answers_only(photos):
    with fake() as server:

        def hashed(**extra):
            with make_teacher(spec(server, **extra), PROMPTS) as t:
                return t.describe()["score_settings_hash"]

        base = hashed()
        assert hashed(max_concurrency=7, request_timeout_s=9.0, max_retries=1) == base  # operational
        assert hashed(min_token_mass=0.2) == base  # acceptance: re-checked on reading a stored answer
        changed = [
            hashed(image_transport="png"),
            hashed(image_transport="jpeg"),
            hashed(image_max_side=512),
            hashed(visual_budget={"max_pixels": 9000, "min_pixels": 3136}),
            hashed(enable_thinking=True),
            hashed(missing_token_policy="zero"),
            hashed(top_logprobs=10),
        ]
        assert base not in changed and len(set(changed)) == len(changed)


# ---------------------------------------------------------------------------
# What the teacher answered


def test_think_first_answers_are_error_rows_naming_mass_and_tokens(photos):
    refs = [ImageRef(n, str(photos[n])) for n in ("small.jpg", "big.jpg", "gray.jpg")]
    with fake(think_first=True) as server:
        with make_teacher(spec(server, enable_thinking=True), PROMPTS) as thinking:
            rows = thinking.score_points(refs)
            pair = thinking.score_pairs([(refs[0], refs[1])])[0]
        with make_teacher(spec(server, enable_thinking=True, min_token_mass=0.0), PROMPTS) as unchecked:
            tail = unchecked.score_points(refs)
        with make_teacher(spec(server), PROMPTS) as non_thinking:  # default: enable_thinking false
            answered = non_thinking.score_points(refs)
    for row in [*rows, pair]:
        assert row.error.startswith(NOT_ANSWERED) and "'<think>'" in row.error
        assert f"answer-token mass {row.mass:.3g} < min_token_mass 0.5" in row.error
        assert row.mass < 1e-3 and all(math.isnan(x) for x in row.logliks)
        assert row.top[0][0] == "<think>"
    # Without the check the labels' tail would have given a finite score that looks like any other:
    # all five labels are inside the top 20, so nothing even counts as missing.
    assert all(r.error is None and r.missing == [] and all(map(math.isfinite, r.logliks)) for r in tail)
    assert all(r.error is None and r.mass > 0.3 for r in answered)


def test_a_chatty_first_word_is_refused_whatever_the_thinking_mode(photos):
    ref = ImageRef("s", str(photos["small.jpg"]))
    with fake(lead_token="Sure") as server, make_teacher(spec(server), PROMPTS) as teacher:
        row = teacher.score_points([ref])[0]
    assert row.error.startswith(NOT_ANSWERED) and "'Sure'" in row.error
    # A first word that pushes every label out of the top K: no mass at all, the same kind of error.
    with fake(lead_token="Sure") as server, make_teacher(spec(server, top_logprobs=1), PROMPTS) as teacher:
        row = teacher.score_points([ref])[0]
    assert row.error.startswith(NOT_ANSWERED) and "none of the labels among the 1 returned top tokens" in row.error
    assert row.mass == 0.0 and row.top[0][0] == "Sure"


def test_shard_of_unanswered_prompts_fails_saying_what_to_change(photos, tmp_path):
    manifest = manifest_of(photos, tmp_path)
    scoring = {"batch_size": 4, "max_error_fraction": 0.05}
    out = tmp_path / "points.parquet"
    with fake(think_first=True) as server:
        thinking = spec(server, enable_thinking=True)
        with pytest.raises(TeacherError) as err:
            points_rows(manifest, thinking, PROMPTS, scoring, tmp_path, teacher_name="internvl")
        message = str(err.value)
        assert "10 of 10 rows failed" in message and f"10 of them because {NOT_ANSWERED}" in message
        assert "prompts.point" in message and "teachers.internvl.enable_thinking" in message
        assert "Rerunning will not change" in message and "rerun to ask" not in message
        assert not out.exists()
        # The answers are stored (what the teacher said, whatever the threshold): a rerun with the same settings
        # asks nothing, and a lower threshold only re-assembles them.
        before = server.stats()["chat_requests"]
        with pytest.raises(TeacherError):
            points_rows(manifest, thinking, PROMPTS, scoring, tmp_path, teacher_name="internvl")
        lenient = points_rows(
            manifest,
            thinking | {"min_token_mass": 0.0},
            PROMPTS,
            scoring,
            tmp_path / "lenient",
            store=tmp_path / "store",
            teacher_name="internvl",
        )
        assert server.stats()["chat_requests"] == before and lenient["error"].null_count() == 10
        # Turning thinking off is a new setting: another key, every image answered.
        df = points_rows(manifest, spec(server), PROMPTS, scoring, tmp_path, teacher_name="internvl")
        assert server.stats()["chat_requests"] == before + 10
    assert df["error"].null_count() == df.height == 10
    mass = read_provenance(out)["summary"]["token_mass"]
    assert mass["rows"] == 10 and mass["below_min"] == 0 and mass["min_token_mass"] == 0.5
    assert 0.3 < mass["quantiles"]["0.5"] < 1 and sum(mass["histogram"]["counts"]) == 10


def test_refused_rows_keep_their_mass_for_the_summary(photos, tmp_path):
    manifest = manifest_of({n: photos[n] for n in ("small.jpg", "big.jpg", "gray.jpg", "rgba.png")}, tmp_path)
    with fake(think_first=True) as server:
        df = points_rows(
            manifest,
            spec(server, enable_thinking=True),
            PROMPTS,
            {"batch_size": 4, "max_error_fraction": 1.0},
            tmp_path,
            out=tmp_path / "p.parquet",
            teacher_name="t",
        )
    assert df["teacher_score"].is_null().all() and df["error"].str.starts_with(NOT_ANSWERED).all()
    assert (df["token_mass"] < 1e-3).all() and df["ll_good"].is_nan().all()
    summary = read_provenance(tmp_path / "p.parquet")["summary"]
    assert summary["not_answered_rows"] == 4 and summary["token_mass"]["below_min"] == 4
    assert summary["token_mass"]["histogram"]["counts"][0] == 4
