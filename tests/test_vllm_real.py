"""Against a real vLLM server (GPU host). Skipped unless LEAF_VLLM_BASE_URL is set.

    LEAF_VLLM_BASE_URL=http://gpu-node:8000/v1 \\
    LEAF_VLLM_MODEL=OpenGVLab/InternVL3_5-8B \\
    LEAF_VLLM_API_KEY_ENV=MY_KEY_VAR \\
    pytest -m realvllm tests/test_vllm_real.py -v

LEAF_VLLM_MODEL defaults to the first model the server lists; LEAF_VLLM_API_KEY_ENV
names the variable holding the key (only if the server was started with one).
The checks are ones any competent IQA teacher passes: a clean photo beats a heavily
blurred, noisy, blocky copy of itself, point-wise and in both pair orders, and the
answer tokens hold most of the probability at the answer position (asked in non-thinking
mode, the default). For InternVL and Qwen-VL models the server must also apply a
``visual_budget``: a processor argument it ignored would silently leave the cost and the
view unchanged, so the prompt token count it reports (``usage.prompt_tokens``) must drop.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image, ImageFilter
from skimage import data as skdata

from leaf_steps.teachers import teacher_math as tm
from leaf_steps.teachers.base import ImageRef, make_teacher
from leaf_steps.teachers.image_encoding import image_data_url
from leaf_steps.teachers.visual_budget import family_of
from leaf_steps.teachers.vllm import chat_payload

BASE_URL = os.environ.get("LEAF_VLLM_BASE_URL")
pytestmark = [
    pytest.mark.realvllm,
    pytest.mark.skipif(not BASE_URL, reason="set LEAF_VLLM_BASE_URL to test against a real vLLM server"),
]
PROMPTS = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "demo.yaml").read_text())["prompts"]


@pytest.fixture(scope="module")
def teacher():
    key_env = os.environ.get("LEAF_VLLM_API_KEY_ENV")
    model = os.environ.get("LEAF_VLLM_MODEL")
    if not model:
        headers = {"Authorization": f"Bearer {os.environ[key_env]}"} if key_env else {}
        model = httpx.get(f"{BASE_URL.rstrip('/')}/models", headers=headers, timeout=30).json()["data"][0]["id"]
    spec = {
        "backend": "vllm",
        "name": "real",
        "model": model,
        "base_url": BASE_URL,
        "api_key_env": key_env,
        "max_concurrency": 4,
    }
    with make_teacher(spec, PROMPTS) as t:
        yield t


def prompt_tokens(teacher, path: Path, **spec) -> int:
    """usage.prompt_tokens the server reports for a point request built by a teacher with ``spec``."""
    t = make_teacher({**teacher.spec, **spec}, PROMPTS)
    url = image_data_url(path, t.encoding).data_url
    payload = chat_payload(t.settings["model"], [url], PROMPTS["point"], t.settings)
    r = httpx.post(f"{t.base_url}/chat/completions", json=payload, headers=t._headers(), timeout=120)
    r.raise_for_status()
    return int(r.json()["usage"]["prompt_tokens"])


@pytest.fixture(scope="module")
def clean_and_degraded(tmp_path_factory) -> tuple[ImageRef, ImageRef]:
    root = tmp_path_factory.mktemp("real")
    clean = Image.fromarray(skdata.astronaut())
    clean.save(root / "clean.png")
    rng = np.random.default_rng(0)
    blurred = np.asarray(clean.filter(ImageFilter.GaussianBlur(4)), dtype=np.float64)
    noisy = np.clip(blurred + rng.normal(0, 40, blurred.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(root / "degraded.jpg", quality=5)
    return ImageRef("clean", str(root / "clean.png")), ImageRef("degraded", str(root / "degraded.jpg"))


def test_point_scores_rank_clean_above_degraded(teacher, clean_and_degraded):
    rows = teacher.score_points(list(clean_and_degraded))
    assert [r.error for r in rows] == [None, None]
    assert all(r.mass > 0.5 for r in rows), [r.mass for r in rows]  # the prompt keeps the model on the labels
    scores = tm.expected_score(tm.level_probabilities(np.array([r.logliks for r in rows])))
    assert scores[0] > scores[1] + 0.5, scores
    assert teacher.describe()["label_tokens"]["status"] in ("distinct", "unavailable (no /tokenize with token strings)")


def test_pairs_prefer_clean_in_both_orders(teacher, clean_and_degraded):
    clean, degraded = clean_and_degraded
    rows = teacher.score_pairs([(clean, degraded), (degraded, clean)])
    assert [r.error for r in rows] == [None, None]
    la, lb = np.array([r.logliks for r in rows]).T
    p_a = tm.pair_probability(la, lb)
    assert p_a[0] > 0.5 > p_a[1], p_a


def test_visual_budget_is_applied_by_the_server(teacher, tmp_path):
    family = family_of(teacher.settings["model"])
    if family is None:
        pytest.skip(f"{teacher.settings['model']}: not an InternVL or Qwen-VL model")
    path = tmp_path / "photo_1024x768.png"
    Image.fromarray(skdata.astronaut()).resize((1024, 768)).save(path)
    budget = {"max_tiles": 1} if family == "internvl" else {"max_pixels": 131072}
    default, cut = prompt_tokens(teacher, path), prompt_tokens(teacher, path, visual_budget=budget)
    # InternVL3.5: 13 x 256 -> 256 visual tokens; Qwen3-VL: 768 -> ~128.
    assert cut < 0.4 * default, (default, cut)
