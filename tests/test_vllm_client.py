"""The vLLM teacher client against a loopback fake server speaking vLLM's schema.

The fake's answer distribution is a known function of the image bytes the client
sends (tests/fake_vllm_server.py), so the client's parsed log-likelihoods, the Eq 1-5
values derived from them, and its behaviour under failures are checked against it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import os
import re
import time
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from fake_vllm_server import Behaviour, FakeVllmServer, answer_logprobs, label_of
from leaf_steps.core.errors import ConfigError, InputError, TeacherError
from leaf_steps.images.decode import EXIF_ORIENTATION
from leaf_steps.teachers import image_encoding
from leaf_steps.teachers import teacher_math as tm
from leaf_steps.teachers.base import ImageRef, make_teacher

PROMPTS = {
    "point": "How good is this image? Answer Excellent, Good, Fair, Poor, or Bad.",
    "pair": "Image A first, then Image B. Which is better? Answer A or B.",
}
MODEL = "fake/vlm"
FAST = {"backoff_s": 0.01, "request_timeout_s": 5.0}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[ImageRef]:
    """The astronaut photo at five exposures (dark -> bright), small PNGs."""
    root = tmp_path_factory.mktemp("imgs")
    base = np.asarray(Image.fromarray(skdata.astronaut()).resize((96, 96)), dtype=np.float64)
    refs = []
    for i, gain in enumerate([0.15, 0.4, 0.7, 1.0, 1.6]):
        path = root / f"astro_{i}.png"
        Image.fromarray(np.clip(base * gain, 0, 255).astype(np.uint8)).save(path)
        refs.append(ImageRef(f"astro_{i}", str(path)))
    return refs


@contextmanager
def fake(**behaviour):
    behaviour.setdefault("image_limit", 2)
    with FakeVllmServer(MODEL, Behaviour(**behaviour)) as server:
        yield server


def vllm_teacher(server: FakeVllmServer, **spec):
    return make_teacher(
        {"backend": "vllm", "name": "t", "model": MODEL, "base_url": server.base_url, **FAST, **spec}, PROMPTS
    )


def sent_bytes(path: str, teacher) -> bytes:
    """The image bytes the client puts in its data URL."""
    url = image_encoding.image_data_url(path, teacher.encoding).data_url
    return base64.b64decode(url.split(",", 1)[1])


def expected_label_logliks(images: list[bytes], labels, behaviour: Behaviour) -> list[float]:
    """Per label: log of the summed probability of all its token variants in the fake's vocabulary."""
    sums = dict.fromkeys(labels, 0.0)
    for token, lp in answer_logprobs(images, behaviour).items():
        label = label_of(token, behaviour)
        if label in sums:
            sums[label] += math.exp(lp)
    return [math.log(sums[label]) for label in labels]


def outside_top_k(images: list[bytes], labels, behaviour: Behaviour, k: int) -> list[str]:
    """Labels none of whose variants is among the fake's k most likely tokens."""
    ranked = sorted(answer_logprobs(images, behaviour).items(), key=lambda kv: kv[1], reverse=True)
    inside = {label_of(token, behaviour) for token, _ in ranked[:k]}
    return [label for label in labels if label not in inside]


def assert_matches_server(row, images: list[bytes], labels, behaviour: Behaviour, k: int = 20) -> None:
    want = expected_label_logliks(images, labels, behaviour)
    assert row.missing == outside_top_k(images, labels, behaviour, k)
    seen = [i for i, label in enumerate(labels) if label not in row.missing]
    np.testing.assert_allclose([row.logliks[i] for i in seen], [want[i] for i in seen], rtol=0, atol=1e-9)
    assert row.mass == pytest.approx(sum(math.exp(want[i]) for i in seen), abs=1e-9)
    for i in set(range(len(labels))) - set(seen):  # imputed below every seen label (floor policy)
        assert row.logliks[i] <= min(row.logliks[j] for j in seen)


# ---------------------------------------------------------------------------
# Parsing and the teacher's equations end to end


def test_points_match_server_distribution_and_order_by_brightness(images):
    with fake() as server, vllm_teacher(server) as teacher:
        rows = teacher.score_points(images)
        stats = server.stats()
    assert [r.error for r in rows] == [None] * len(images)
    for ref, row in zip(images, rows):
        assert_matches_server(row, [sent_bytes(ref.path, teacher)], tm.LEVELS, server.behaviour)
        assert 0.3 < row.mass < 1.0  # distractor tokens keep some mass: recorded, not hidden
    assert rows[0].missing == ["Excellent"] and rows[2].missing == []  # the dark photo's "Excellent" is off the top 20
    scores = tm.expected_score(tm.level_probabilities(np.array([r.logliks for r in rows])))  # Eq 1-2
    assert np.all(np.diff(scores) > 0.2), scores  # brighter exposure -> higher teacher score
    assert 1.0 <= scores.min() and scores.max() <= 5.0
    # The request is the one documented: image first, then the prompt, 1 token, greedy, K logprobs.
    req = stats["last_request"]
    assert req["content_types"] == [["image_url", "text"]] and req["texts"] == [PROMPTS["point"]]
    assert (req["logprobs"], req["top_logprobs"], req["max_tokens"], req["temperature"]) == (True, 20, 1, 0.0)
    assert req["model"] == MODEL


def test_pairs_eq3_to_eq5_and_order_swap(images):
    dark, mid, bright = images[0], images[2], images[4]
    with fake() as server, vllm_teacher(server) as teacher:
        rows = teacher.score_pairs([(bright, dark), (dark, bright), (mid, bright)])
        stats = server.stats()
    assert all(r.error is None for r in rows)
    for (a, b), row in zip([(bright, dark), (dark, bright), (mid, bright)], rows):
        assert_matches_server(
            row, [sent_bytes(a.path, teacher), sent_bytes(b.path, teacher)], tm.PAIR_LABELS, server.behaviour
        )
    la, lb = np.array([r.logliks for r in rows]).T
    p_a = tm.pair_probability(la, lb)  # Eq 3
    assert p_a[0] > 0.9 and p_a[1] < 0.1 and p_a[0] == pytest.approx(1 - p_a[1], abs=1e-9)
    assert list(tm.preference_label(p_a)) == [1, 0, 0]  # Eq 4: the brighter image wins
    w = tm.pair_confidence(p_a)  # Eq 5
    assert w[0] > w[2] > 0  # a larger quality gap gives a more confident label
    assert stats["last_request"]["content_types"] == [["image_url", "image_url", "text"]]
    assert stats["last_request"]["texts"] == [PROMPTS["pair"]]


def test_space_and_case_variants_are_summed(images):
    # K covers the whole toy vocabulary so that variants do not push anything out of the top K.
    with fake(max_logprobs=100) as plain, vllm_teacher(plain, top_logprobs=100) as t1:
        want = t1.score_points(images[:3])
    with fake(variants=True, max_logprobs=100) as server, vllm_teacher(server, top_logprobs=100) as t2:
        got = t2.score_points(images[:3])
        raw = httpx.post(
            f"{server.base_url}/chat/completions",
            json={
                "model": MODEL,
                "logprobs": True,
                "top_logprobs": 20,
                "max_tokens": 1,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {
                                    "url": image_encoding.image_data_url(images[2].path, t2.encoding).data_url
                                },
                            }
                        ],
                    }
                ],
            },
        ).json()
    tokens = [e["token"] for e in raw["choices"][0]["logprobs"]["content"][0]["top_logprobs"]]
    assert {"Fair", " Fair", "fair"} <= set(tokens)  # the server really splits the label three ways
    for a, b in zip(want, got):
        assert a.missing == b.missing == []
        np.testing.assert_allclose(a.logliks, b.logliks, atol=1e-9)
        assert a.mass == pytest.approx(b.mass, abs=1e-9)


def test_missing_tokens_are_listed_and_imputed(images):
    with fake(missing=("Bad", "Poor")) as server:
        with vllm_teacher(server) as teacher:
            floor_rows = teacher.score_points(images[3:])
        with vllm_teacher(server, missing_token_policy="zero") as teacher:
            zero_rows = teacher.score_points(images[3:])
    for row in floor_rows:
        assert row.error is None and row.missing == ["Poor", "Bad"]
        # floor: the smallest returned logprob, an upper bound for a token outside the top K
        assert row.logliks[3] == row.logliks[4] < min(row.logliks[:3])
        assert math.isfinite(row.logliks[4])
    for row in zero_rows:
        assert row.missing == ["Poor", "Bad"] and row.logliks[3] == row.logliks[4] == -math.inf
    # A small K truncates low-probability labels the same way without any help from the fake.
    with fake() as server, vllm_teacher(server, top_logprobs=3) as teacher:
        row = teacher.score_points([images[4]])[0]
    assert row.error is None and row.missing and set(row.missing) < set(tm.LEVELS)


def test_first_tokens_from_tokenize_map_split_words(images):
    with fake(subword=True) as server:
        with vllm_teacher(server) as teacher:
            checked = teacher.score_points([images[4]])[0]
            info = teacher.describe()["label_tokens"]
        with vllm_teacher(server, check_label_tokens=False) as teacher:
            unchecked = teacher.score_points([images[4]])[0]
    assert info["status"] == "distinct" and "Excel" in info["first_tokens"]["Excellent"]
    assert checked.error is None and "Excellent" not in checked.missing
    # Without the /tokenize check the server's "Excel" is not recognised as Excellent.
    assert "Excellent" in unchecked.missing
    assert checked.logliks[0] > unchecked.logliks[0]


# ---------------------------------------------------------------------------
# Failures become rows, never lost batches


def test_transient_500_and_429_are_retried(images):
    with fake(fail_first=3) as server, vllm_teacher(server, max_retries=3, max_concurrency=1) as teacher:
        rows = teacher.score_points(images[:2])
        stats = server.stats()
    assert [r.error for r in rows] == [None, None]
    assert stats["chat_requests"] == 2 + 3
    with fake(rate_limit_first=2) as server, vllm_teacher(server, max_retries=2) as teacher:
        rows = teacher.score_points(images[:2])
    assert [r.error for r in rows] == [None, None]


def test_persistent_500_gives_error_rows_after_retries(images):
    with fake(fail_first=1000) as server, vllm_teacher(server, max_retries=2) as teacher:
        rows = teacher.score_points(images[:3])
        stats = server.stats()
    assert stats["chat_requests"] == 3 * 3
    for row in rows:
        assert "HTTP 500" in row.error and "EngineCore" in row.error and "3 attempt(s)" in row.error
        assert all(math.isnan(v) for v in row.logliks)


def test_hanging_requests_time_out_and_retry(images):
    # The first two requests hang far longer than the timeout: each item's answer must come from its
    # retry (requests 3 and 4), not from waiting the hang out. The timeout leaves a loaded machine
    # ample time to answer the retries.
    with fake(hang_first=2, hang_s=120) as server:
        with vllm_teacher(server, request_timeout_s=2.0, max_retries=1) as teacher:
            rows = teacher.score_points(images[:2])
            stats = server.stats()
        assert [r.error for r in rows] == [None, None]
        assert (stats["chat_requests"], stats["answers"]) == (4, 2)
    with fake(hang_first=1000, hang_s=120) as server:
        with vllm_teacher(server, request_timeout_s=0.3, max_retries=0) as teacher:
            rows = teacher.score_points(images[:2])
            stats = server.stats()
    assert all("no answer within request_timeout_s=0.3s" in r.error for r in rows)
    assert (stats["chat_requests"], stats["answers"]) == (2, 0)  # max_retries=0: no second attempt


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ({"malformed": True}, "malformed JSON"),
        ({"no_logprobs": True}, "no choices[0].logprobs.content"),
    ],
)
def test_unusable_answers_become_error_rows(images, behaviour, message):
    with fake(**behaviour) as server, vllm_teacher(server) as teacher:
        rows = teacher.score_points(images[:2])
        requests = server.stats()["chat_requests"]
    assert all(message in r.error for r in rows)
    assert requests == 2  # a deterministic bad answer is not retried


def test_client_errors_are_not_retried(images):
    with fake(max_logprobs=5) as server, vllm_teacher(server, top_logprobs=20, max_retries=3) as teacher:
        rows = teacher.score_points(images[:2])
        requests = server.stats()["chat_requests"]
    assert requests == 2
    assert all("HTTP 400" in r.error and "exceeds maximum of 5" in r.error for r in rows)


def attempts(row) -> int:
    return int(re.search(r"gave up after (\d+) attempt", row.error).group(1))


def test_server_dying_mid_run_gives_error_rows_for_the_rest(images):
    refs = images * 4  # 20 items
    with fake(die_after=5) as server, vllm_teacher(server, max_concurrency=2, max_retries=2) as teacher:
        rows = teacher.score_points(refs)
        answers = server.stats()["answers"]
    ok = [r for r in rows if r.error is None]
    failed = [r for r in rows if r.error is not None]
    # Every answer the server sent is a row; the requests in flight when it died may have been answered.
    assert len(rows) == len(refs) and len(ok) == answers and 5 <= answers <= 5 + 2
    assert all("connect" in r.error or "failed" in r.error for r in failed)
    # Once an item gave up on a dead server, the others fail at their first attempt instead of each
    # waiting through its retries: only the items in flight at that moment (max_concurrency) retried.
    assert 1 <= sum(attempts(r) > 1 for r in failed) <= 2
    assert max(attempts(r) for r in failed) == 3


def test_server_down_for_the_whole_batch(images):
    with fake() as server:
        url = server.base_url
    with make_teacher(
        {"backend": "vllm", "model": MODEL, "base_url": url, **FAST, "max_retries": 3, "max_concurrency": 4}, PROMPTS
    ) as teacher:  # entering does not raise: rows carry the errors
        rows = teacher.score_points(images * 4)
    assert all(r.error and "cannot connect" in r.error for r in rows)
    # Later items do not each wait through their retries: beyond the first items in flight (4 workers),
    # every item fails at its first attempt.
    assert 1 <= sum(attempts(r) > 1 for r in rows) <= 4 and max(attempts(r) for r in rows) == 4
    assert teacher.describe()["label_tokens"] == {"status": "not checked"}


def test_checks_run_on_entering_so_provenance_has_them(images):
    with fake(subword=True) as server, vllm_teacher(server) as teacher:
        info = teacher.describe()  # the scoring driver writes provenance before the first batch
        requests_before_scoring = server.stats()["chat_requests"]
    assert info["label_tokens"]["status"] == "distinct" and requests_before_scoring == 0
    settings = info["score_settings"]
    assert settings["model"] == MODEL and settings["top_logprobs"] == 20
    assert settings["image"] == {"max_side": 1024, "transport": "auto"} and settings["enable_thinking"] is False
    assert info["acceptance"] == {"min_token_mass": 0.5}


def test_unreadable_image_fails_its_row_only(images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    refs = [images[0], ImageRef("gone", str(tmp_path / "gone.png")), ImageRef("broken", str(broken))]
    with fake() as server, vllm_teacher(server) as teacher:
        rows = teacher.score_points(refs)
    assert rows[0].error is None
    assert "gone.png" in rows[1].error and "not found" in rows[1].error
    assert "broken.jpg" in rows[2].error and "not a readable image" in rows[2].error


# ---------------------------------------------------------------------------
# Configuration, API key, provenance


def test_api_key_is_sent_as_bearer_and_never_described(images, monkeypatch):
    key = "sk-test-" + os.urandom(8).hex()
    monkeypatch.setenv("LEAF_TEST_VLLM_KEY", key)
    with fake(api_key=key) as server:
        with vllm_teacher(server, api_key_env="LEAF_TEST_VLLM_KEY") as teacher:
            rows = teacher.score_points(images[:1])
            described = json.dumps(teacher.describe())
        assert rows[0].error is None and server.stats()["auth_headers"] == [f"Bearer {key}"]
        assert key not in described and "LEAF_TEST_VLLM_KEY" not in described
        with pytest.raises(TeacherError, match="401"):
            vllm_teacher(server).score_points(images[:1])
        monkeypatch.setenv("LEAF_TEST_VLLM_KEY", "wrong")
        with pytest.raises(TeacherError, match=r"401.*\$LEAF_TEST_VLLM_KEY"):
            vllm_teacher(server, api_key_env="LEAF_TEST_VLLM_KEY").score_points(images[:1])
    monkeypatch.delenv("LEAF_TEST_VLLM_KEY")
    with pytest.raises(ConfigError, match=r"teachers\.t\.api_key_env: environment variable LEAF_TEST_VLLM_KEY"):
        make_teacher({"backend": "vllm", "name": "t", "model": MODEL, "api_key_env": "LEAF_TEST_VLLM_KEY"}, PROMPTS)


def test_extra_body_is_passed_through(images):
    with fake() as server, vllm_teacher(server, extra_body={"allowed_token_ids": [11, 12], "top_k": 5}) as teacher:
        teacher.score_points(images[:1])
        req = server.stats()["last_request"]
    assert req["allowed_token_ids"] == [11, 12] and req["top_k"] == 5


def test_model_not_served_is_a_config_error(images):
    with fake() as server:
        with pytest.raises(ConfigError, match=r"teachers\.t\.model: 'other/model' is not served.*fake/vlm"):
            vllm_teacher(server, model="other/model").score_points(images[:1])


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"modle": "x"}, "teachers.t.modle: unknown key"),
        ({"top_logprobs": 0}, "teachers.t.top_logprobs"),
        ({"max_concurrency": "8"}, "teachers.t.max_concurrency"),
        ({"image_transport": "webp"}, "teachers.t.image_transport"),
        ({"image_format": "jpeg"}, "teachers.t.image_format: unknown key"),
        ({"enable_thinking": "no"}, "teachers.t.enable_thinking"),
        ({"min_token_mass": 1.5}, "teachers.t.min_token_mass"),
        ({"visual_budget": {"max_tiles": 0}}, "teachers.t.visual_budget.max_tiles"),
        ({"visual_budget": {"tiles": 2}}, "teachers.t.visual_budget.tiles: unknown key"),
        ({"visual_budget": {"max_tiles": 2, "max_pixels": 9}}, "teachers.t.visual_budget: give either"),
        (
            {"model": "Qwen/Qwen3-VL-8B-Instruct", "visual_budget": {"max_tiles": 2}},
            "teachers.t.visual_budget.max_tiles",
        ),
        (
            {"model": "OpenGVLab/InternVL3_5-8B", "visual_budget": {"max_pixels": 200_000}},
            "teachers.t.visual_budget.max_pixels",
        ),
        ({"visual_budget": {"max_pixels": 200_000}}, "teachers.t.visual_budget.min_pixels: required"),
        (
            {"extra_body": {"chat_template_kwargs": {"enable_thinking": True}}},
            "teachers.t.extra_body.chat_template_kwargs.enable_thinking",
        ),
        (
            {"extra_body": {"mm_processor_kwargs": {"max_dynamic_patch": 4}}},
            "teachers.t.extra_body.mm_processor_kwargs.max_dynamic_patch",
        ),
        ({"missing_token_policy": "drop"}, "teachers.t.missing_token_policy"),
        ({"base_url": "gpu-node:8000"}, "teachers.t.base_url"),
        ({"extra_body": {"logprobs": False}}, "teachers.t.extra_body.logprobs"),
        ({"base_url": None, "launch": {"gpus": [0]}}, "teachers.t.launch.gpus: unknown key"),
        ({"base_url": None, "launch": {"tensor_parallel_size": 2, "gpu_ids": [0]}}, "teachers.t.launch.gpu_ids"),
        (
            {"base_url": None, "gpus": 1, "launch": {"tensor_parallel_size": 2}},
            "teachers.t.launch.tensor_parallel_size",
        ),
        ({"gpus": -1}, "teachers.t.gpus"),
        ({"base_url": None, "launch": {"args": ["--max-logprobs", "5"]}}, "teachers.t.launch.args"),
        ({"base_url": "http://h:1/v1", "launch": {"port": 9000}}, "teachers.t.launch: only used"),
    ],
)
def test_bad_spec_names_the_key(spec, key):
    full = {"backend": "vllm", "name": "t", "model": MODEL, "base_url": "http://127.0.0.1:9/v1", **spec}
    with pytest.raises(ConfigError) as err:
        make_teacher(full, PROMPTS)
    assert key in str(err.value)


def test_base_url_without_v1_is_completed():
    teacher = make_teacher({"backend": "vllm", "model": MODEL, "base_url": "http://gpu-7:8000/"}, PROMPTS)
    assert teacher.base_url == "http://gpu-7:8000/v1" and teacher.root_url == "http://gpu-7:8000"


def test_sync_methods_work_inside_a_running_event_loop(images):
    async def notebook_cell(teacher):
        return teacher.score_points(images[:2])

    with fake() as server, vllm_teacher(server) as teacher:
        rows = asyncio.run(notebook_cell(teacher))
    assert [r.error for r in rows] == [None, None]


# ---------------------------------------------------------------------------
# Image encoding


def test_downscale_never_upscales(tmp_path):
    settings = image_encoding.EncodingSettings(max_side=128, transport="jpeg", quality=90)
    cases = {"small.png": (40, 30), "edge.png": (128, 64), "wide.jpg": (600, 200), "tall.jpg": (150, 900)}
    photo = Image.fromarray(skdata.chelsea())
    for name, size in cases.items():
        photo.resize(size).save(tmp_path / name)
    got = {}
    for name in cases:
        url = image_encoding.image_data_url(tmp_path / name, settings).data_url
        assert url.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as img:
            got[name] = img.size
    assert got == {"small.png": (40, 30), "edge.png": (128, 64), "wide.jpg": (128, 43), "tall.jpg": (21, 128)}
    assert image_encoding.target_size(10, 5, 1024) == (10, 5)
    # A phone photo stored sideways with EXIF orientation 6 is sent upright.
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    photo.resize((300, 200)).save(tmp_path / "phone.jpg", exif=exif)
    assert image_encoding.load_image(tmp_path / "phone.jpg", 150).size == (100, 150)
    assert image_encoding.load_image(tmp_path / "phone.jpg").size == (200, 300)


def test_encoding_cache_reuses_and_notices_rewrites(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(skdata.camera()[:64, :64]).save(path)
    settings = image_encoding.EncodingSettings(max_side=64, transport="png")
    image_encoding.clear_cache()
    first = image_encoding.image_data_url(path, settings)
    assert image_encoding.image_data_url(path, settings) == first
    assert image_encoding.cache_info()["hits"] == 1
    assert first.data_url.startswith("data:image/png;base64,") and first.kind == "png"
    Image.fromarray(255 - skdata.camera()[:64, :64]).save(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))  # a different mtime for sure
    assert image_encoding.image_data_url(path, settings) != first


def test_unreadable_image_is_an_input_error_naming_the_file(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(InputError, match="notes.txt: not a readable image"):
        image_encoding.load_image(bad, 64)
    with pytest.raises(InputError, match="missing.png: image file not found"):
        image_encoding.image_data_url(tmp_path / "missing.png", image_encoding.EncodingSettings())
