"""The teacher score store: concurrent writers lose and tear nothing, keys follow what changes an answer,
a teacher is set up only for misses, and the store can be summarised and compacted."""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import math
import multiprocessing
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from fake_teacher import FakeTeacher
from leaf_steps.core.errors import InputError, TeacherError
from leaf_steps.core.io import read_provenance
from leaf_steps.teachers import base
from leaf_steps.teachers.base import make_teacher, split_spec
from leaf_steps.teachers.serve_args import answer_serve_args
from leaf_steps.teachers.store import ANSWER_CODE, ANSWER_FORMAT_VERSION, TeacherStore, request_settings, settings_hash
from scoring_helpers import points_rows, write_image_list

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = {"point": "Rate it.", "pair": "A or B?"}


@pytest.fixture(autouse=True)
def fake_backend(monkeypatch):
    monkeypatch.setitem(base.BACKENDS, "fake", "fake_teacher:FakeTeacher")
    monkeypatch.setattr(FakeTeacher, "calls", [])
    monkeypatch.setattr(FakeTeacher, "fail_ids", set())
    monkeypatch.setattr(FakeTeacher, "kill_after_calls", None)


def image_list(tmp_path: Path, ids: list[str], name: str = "images.parquet", real: bool = False) -> Path:
    """An image list; ``real``: small PNG files (a teacher that reads pixels), else paths that do not exist."""
    paths = []
    for i in ids:
        path = tmp_path / "photos" / f"{i}.png"
        if real and not path.exists():
            import numpy as np
            from PIL import Image

            path.parent.mkdir(parents=True, exist_ok=True)
            seed = int(hashlib.sha256(i.encode()).hexdigest()[:8], 16)
            Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path) if real else f"/nowhere/{i}.png")
    return write_image_list(pl.DataFrame({"image_id": ids, "path": paths}), tmp_path / name)


# --------------------------------------------------------------------------- concurrent writers


def _writer(args: tuple[str, str, str, str, int]) -> int:
    """A scoring job in its own process: FakeTeacher answers, a new store part every 2 answers."""
    tests_dir, images, work, store, start_at = args
    sys.path.insert(0, tests_dir)
    import time

    from leaf_steps.teachers import base as b
    from scoring_helpers import points_rows as run

    b.BACKENDS["fake"] = "fake_teacher:FakeTeacher"
    while time.time() < start_at:  # both writers start together
        time.sleep(0.001)
    run(
        Path(images),
        {"backend": "fake"},
        PROMPTS,
        {"batch_size": 2, "max_error_fraction": 0.0},
        Path(work),
        store=Path(store),
        flush_rows=2,
    )
    return 0


def _reader(args: tuple[str, str, float]) -> int:
    """Reads the store over and over while the writers write: every row it sees must be whole."""
    store, shash, until = args
    import time

    from leaf_steps.teachers.store import TeacherStore as S

    reads = 0
    while time.time() < until:
        table, _ = S(store).read_kind(shash, "point")
        assert table["key"].null_count() == 0 and all(len(ll) == 5 for ll in table["logliks"].to_list())
        reads += 1
    return reads


def test_concurrent_writers_lose_and_tear_nothing(tmp_path):
    import time

    ids = [f"img{i:03d}" for i in range(80)]
    lists = [image_list(tmp_path, ids[:50], "a.parquet"), image_list(tmp_path, ids[30:], "b.parquet")]  # 20 shared
    store = tmp_path / "store"
    teacher = make_teacher({"backend": "fake"}, PROMPTS)
    shash = settings_hash(request_settings(teacher.score_settings(), "point", PROMPTS["point"]))
    start = time.time() + 3.0
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        reader = pool.apply_async(_reader, ((str(store), shash, start + 12.0),))
        writers = pool.map_async(
            _writer,
            [
                (str(Path(__file__).parent), str(lst), str(tmp_path / f"w{k}"), str(store), start)
                for k, lst in enumerate(lists)
            ],
        )
        assert writers.get(timeout=240) == [0, 0]
        assert reader.get(timeout=240) > 0
    parts = TeacherStore(store).parts(shash, "point")
    assert not [p for p in (store / shash / "point").iterdir() if p.name.startswith(".")]  # no temporary left
    every = pl.concat([pl.read_parquet(p) for p in parts])
    # At most 2 answers a part, so the writers really wrote many small files side by side. How many depends on
    # how many of the 20 shared images the later writer found already stored: 40 parts at least, 50 at most.
    assert 40 <= math.ceil(every.height / 2) <= len(parts) <= 50
    by_key = {hashlib.sha256(i.encode()).hexdigest(): i for i in ids}
    assert set(every["key"]) == set(by_key)  # nothing lost
    assert 80 <= every.height <= 100  # a shared image may have been answered by both
    for key, logliks in every.select("key", "logliks").iter_rows():  # nothing torn: each row is its image's answer
        q = FakeTeacher.quality(by_key[key]) * 4
        assert logliks == pytest.approx([-((q - c) ** 2) for c in (4, 3, 2, 1, 0)])
    # A third run over all 80 images asks nothing.
    FakeTeacher.calls = []
    points_rows(
        image_list(tmp_path, ids, "all.parquet"),
        {"backend": "fake"},
        PROMPTS,
        {"batch_size": 8},
        tmp_path / "all",
        store=store,
    )
    assert FakeTeacher.calls == []


# --------------------------------------------------------------------------- keys


def test_settings_json_is_written_once_and_a_mismatch_is_refused(tmp_path):
    store = TeacherStore(tmp_path / "s")
    settings = request_settings({"backend": "fake"}, "point", "Rate it.")
    shash = settings_hash(settings)
    store.register(shash, settings)
    store.register(shash, settings)  # idempotent
    assert json.loads((tmp_path / "s" / shash / "settings.json").read_text())["answer_format"] == ANSWER_FORMAT_VERSION
    with pytest.raises(InputError, match="holds other settings"):
        store.register(shash, request_settings({"backend": "fake"}, "point", "Other."))
    with pytest.raises(ValueError, match="kind"):
        request_settings({}, "triple", None)


def vllm_settings(**extra) -> dict:
    spec = {"backend": "vllm", "model": "org/m", "base_url": "http://127.0.0.1:9/v1", **extra}
    return make_teacher(spec, PROMPTS).score_settings()


def test_what_is_operational_never_reaches_the_key_and_what_changes_answers_does():
    base_settings = vllm_settings()
    operational = [
        {"max_concurrency": 3},
        {"request_timeout_s": 7.0},
        {"max_retries": 0},
        {"backoff_s": 0.1},
        {"base_url": "http://other:8000/v1"},
        {"gpus": 4},
        {"min_token_mass": 0.1},
        {"name": "x"},
        {"api_key_env": None},
    ]
    for extra in operational:
        assert vllm_settings(**extra) == base_settings, extra
    answering = [
        {"model": "org/other"},
        {"top_logprobs": 5},
        {"image_transport": "png"},
        {"image_max_side": 512},
        {"enable_thinking": True},
        {"temperature": 0.5},
        {"extra_body": {"seed": 3}},
        {"missing_token_policy": "zero"},
        {"visual_budget": {"max_tiles": 2}},
    ]
    keys = {json.dumps(vllm_settings(**extra), sort_keys=True) for extra in answering}
    assert len(keys) == len(answering) and json.dumps(base_settings, sort_keys=True) not in keys


def test_launched_server_arguments_split_into_operational_and_answer_changing():
    args = [
        "--gpu-memory-utilization",
        "0.9",
        "--dtype=float16",
        "--enforce-eager",
        "--max-num-seqs",
        "64",
        "--quantization",
        "awq",
        "--enable-prefix-caching",
        "--some-new-flag",
    ]
    assert answer_serve_args(args) == ["--dtype=float16", "--quantization", "awq", "--some-new-flag"]
    launched = {"backend": "vllm", "model": "org/m", "gpus": 1}
    plain = make_teacher(launched | {"launch": {"tensor_parallel_size": 1, "args": ["--max-num-seqs", "8"]}}, PROMPTS)
    tuned = make_teacher(
        launched
        | {"launch": {"args": ["--gpu-memory-utilization", "0.5"], "max_model_len": 4096, "trust_remote_code": True}},
        PROMPTS,
    )
    halved = make_teacher(launched | {"launch": {"args": ["--dtype", "float16"]}}, PROMPTS)
    endpoint = make_teacher({"backend": "vllm", "model": "org/m", "base_url": "http://h:8000/v1"}, PROMPTS)
    assert plain.score_settings() == tuned.score_settings() == endpoint.score_settings()
    assert halved.score_settings()["serve_args"] == ["--dtype", "float16"]
    # The scoring rule's tracked params carry the same split.
    assert "launch" not in split_spec(launched | {"launch": {"args": ["--max-num-seqs", "8"]}})["score"]
    assert split_spec(launched | {"launch": {"args": ["--dtype", "float16"]}})["score"]["serve_args"] == [
        "--dtype",
        "float16",
    ]


@pytest.mark.parametrize(
    "spec",
    [
        {
            "backend": "vllm",
            "model": "org/m",
            "base_url": "http://h:8000/v1",
            "max_concurrency": 4,
            "top_logprobs": 9,
            "min_token_mass": 0.3,
            "gpus": 1,
            "name": "t",
        },
        {
            "backend": "transformers",
            "model": "tiny:qwen2_vl",
            "device": "cpu",
            "dtype": "float32",
            "batch_size": 2,
            "min_token_mass": 0.0,
            "enable_thinking": None,
            "gpus": 0,
        },
        {"backend": "niqe", "model_path": "x.npz", "patch_size": 16, "level_scale": 0.7, "gpus": 0},
    ],
    ids=["vllm", "transformers", "niqe"],
)
def test_split_spec_tracks_every_key_the_store_key_reads(spec):
    parts = split_spec(spec)
    assert set(parts["score"]) | set(parts["acceptance"]) | set(parts["operational"]) >= set(spec)
    assert not set(parts["score"]) & set(parts["operational"])
    if spec["backend"] == "niqe":
        return  # its key reads the fitted model (an input file of the rule), see test_niqe_key_is_the_fitted_model
    # Every key outside the tracked part leaves the store key alone.
    key = make_teacher(spec, PROMPTS).score_settings()
    for name in set(parts["operational"]) | set(parts["acceptance"]):
        changed = dict(spec)
        changed[name] = {
            "gpus": 3,
            "max_concurrency": 9,
            "batch_size": 7,
            "device": "cpu",
            "name": "other",
            "model_path": "y.npz",
            "min_token_mass": 0.9,
            "base_url": "http://o:1/v1",
        }.get(name, spec[name])
        assert make_teacher(changed, PROMPTS).score_settings() == key, name


def test_niqe_key_is_the_fitted_model(tmp_path):
    from leaf_steps.fit_niqe import fit_niqe

    fit_niqe(None, {"backend": "niqe", "patch_size": 16}, tmp_path / "a.npz")
    (tmp_path / "b.npz").write_bytes((tmp_path / "a.npz").read_bytes())
    fit_niqe(None, {"backend": "niqe", "patch_size": 24}, tmp_path / "c.npz")
    key = lambda m, **kw: make_teacher({"backend": "niqe", "model_path": str(tmp_path / m), **kw}, {}).score_settings()  # noqa: E731
    assert key("a.npz") == key("b.npz")  # same fit, another file: the same answers
    assert key("a.npz") != key("c.npz") and key("a.npz") != key("a.npz", level_scale=0.3)
    teacher = make_teacher({"backend": "niqe", "model_path": str(tmp_path / "a.npz")}, {})
    assert teacher.reads_prompts is False and teacher.prompt_for("point") is None


def _code_hash(ref: str) -> str:
    module_name, name = ref.split(":")
    source = textwrap.dedent(inspect.getsource(getattr(importlib.import_module(module_name), name)))
    tree = ast.parse(source).body[0]
    if ast.get_docstring(tree):
        tree.body = tree.body[1:]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


# The code that turns a response into a stored answer, as of ANSWER_FORMAT_VERSION 1. When this test fails you
# changed one of these functions: if stored answers would now come out differently for the same response, bump
# ANSWER_FORMAT_VERSION in leaf_steps/teachers/store.py (every answer is then asked again); either way update
# the hashes here.
ANSWER_CODE_HASHES = {
    "leaf_steps.teachers.teacher_math:collapse_top_logprobs": "f7cd390b4674f545",
    "leaf_steps.teachers.teacher_math:label_aliases": "458693b6695befa6",
    "leaf_steps.teachers.teacher_math:normalize_token": "e9ccb5c093a17130",
    "leaf_steps.teachers.vllm:parse_top_logprobs": "4e9ffd37a4fa7263",
    "leaf_steps.teachers.vllm:chat_payload": "44a4c4a6e9ff4ac8",
    "leaf_steps.teachers.vllm:request_extras": "dc8964d3cbb32c36",
    "leaf_steps.teachers.hf:label_token_ids": "a9cfab9be1226286",
    "leaf_steps.teachers.standin:level_logliks": "8927f24f8c174350",
    "leaf_steps.teachers.standin:pair_logliks": "a4c9c6038e10a14d",
}


def test_answer_code_is_pinned_to_the_format_version():
    assert ANSWER_FORMAT_VERSION == 1 and set(ANSWER_CODE) == set(ANSWER_CODE_HASHES)
    assert {ref: _code_hash(ref) for ref in ANSWER_CODE} == ANSWER_CODE_HASHES


# --------------------------------------------------------------------------- set up only for misses


def test_a_teacher_is_set_up_only_when_there_is_a_miss(tmp_path):
    images = image_list(tmp_path, [f"img{i}" for i in range(6)], real=True)
    store = tmp_path / "store"
    hf = {
        "backend": "transformers",
        "model": "tiny:qwen2_vl",
        "device": "cpu",
        "dtype": "float32",
        "min_token_mass": 0.0,
    }
    first = points_rows(images, hf, PROMPTS, {"batch_size": 6, "max_error_fraction": 1.0}, tmp_path / "a", store=store)
    assert read_provenance(tmp_path / "a/points/1-of-1.parquet")["teacher_set_up"] is True
    # The same settings with a model that cannot be loaded: every answer is stored, nothing is loaded.
    broken = hf | {"model": "tiny:qwen2_vl"}
    import leaf_steps.teachers.hf as hf_module

    def refuse(self):
        raise TeacherError("the model was loaded although every answer is stored")

    original = hf_module.TransformersTeacher._load
    hf_module.TransformersTeacher._load = refuse
    try:
        again = points_rows(
            images, broken, PROMPTS, {"batch_size": 6, "max_error_fraction": 1.0}, tmp_path / "b", store=store
        )
        assert again.equals(first)
        assert read_provenance(tmp_path / "b/points/1-of-1.parquet")["teacher_set_up"] is False
        with pytest.raises(TeacherError, match="was loaded"):  # one new image: now it must load
            points_rows(
                image_list(tmp_path, [f"img{i}" for i in range(7)], "more.parquet", real=True),
                broken,
                PROMPTS,
                {"batch_size": 6},
                tmp_path / "c",
                store=store,
            )
    finally:
        hf_module.TransformersTeacher._load = original


def test_a_launched_vllm_server_is_not_started_when_every_answer_is_stored(tmp_path):
    images = image_list(tmp_path, [f"img{i}" for i in range(4)])
    store = tmp_path / "store"
    spec = {"backend": "vllm", "model": "org/m", "launch": {"executable": str(tmp_path / "no-such-vllm")}}
    teacher = make_teacher(spec, PROMPTS)
    settings = request_settings(teacher.score_settings(), "point", PROMPTS["point"])
    shash = settings_hash(settings)
    TeacherStore(store).register(shash, settings)
    rows = pl.DataFrame(
        [
            {
                "key": hashlib.sha256(f"img{i}".encode()).hexdigest(),
                "logliks": [-1.0, -2.0, -3.0, -4.0, -5.0],
                "token_mass": 0.9,
                "missing": [],
                "top_tokens": ["Excellent"],
                "top_logprobs": [-1.0],
                "image_bytes": ["original"],
                "answer_error": None,
            }
            for i in range(4)
        ]
    )
    TeacherStore(store).add(shash, "point", rows, {"step": "test"})
    df = points_rows(images, spec, PROMPTS, {"batch_size": 4}, tmp_path / "a", store=store)
    assert df["error"].null_count() == 4 and df["ll_excellent"].to_list() == [-1.0] * 4


# --------------------------------------------------------------------------- summary and compaction


def test_summary_and_compaction(tmp_path):
    images = image_list(tmp_path, [f"img{i:02d}" for i in range(20)])
    store = tmp_path / "store"
    points_rows(images, {"backend": "fake"}, PROMPTS, {"batch_size": 4}, tmp_path / "a", store=store, flush_rows=4)
    points_rows(
        images, {"backend": "fake"}, PROMPTS | {"point": "Other?"}, {"batch_size": 20}, tmp_path / "b", store=store
    )
    info = TeacherStore(store).summary()
    assert [
        (e["kind"], e["backend"], e["kinds"]["point"]["answers"], e["kinds"]["point"]["parts"])
        for e in sorted(info["settings"], key=lambda e: e["kinds"]["point"]["parts"])
    ] == [("point", "fake", 20, 1), ("point", "fake", 20, 5)]
    assert info["bytes"] > 0
    proc = subprocess.run(
        [sys.executable, "-m", "leaf_steps.core.cli", "store", "summary", str(store)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 settings" in proc.stdout and "fake" in proc.stdout and "20" in proc.stdout
    inspected = subprocess.run(
        [sys.executable, "-m", "leaf_steps.core.cli", "inspect", str(store)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert inspected.returncode == 0 and inspected.stdout == proc.stdout
    (five,) = [e["settings_hash"] for e in info["settings"] if e["kinds"]["point"]["parts"] == 5]
    before, _ = TeacherStore(store).read_kind(five, "point")
    assert TeacherStore(store).compact(five, "point") == (5, 20)
    after, n = TeacherStore(store).read_kind(five, "point")
    assert n == 1 and after.sort("key").equals(before.sort("key"))
    FakeTeacher.calls = []
    points_rows(images, {"backend": "fake"}, PROMPTS, {"batch_size": 4}, tmp_path / "c", store=store)
    assert FakeTeacher.calls == []


def test_inspect_shows_reused_and_scored(tmp_path):
    images = image_list(tmp_path, [f"img{i:02d}" for i in range(10)])
    store = tmp_path / "store"
    points_rows(
        image_list(tmp_path, [f"img{i:02d}" for i in range(6)], "six.parquet"),
        {"backend": "fake"},
        PROMPTS,
        {"batch_size": 4},
        tmp_path / "a",
        store=store,
    )
    points_rows(images, {"backend": "fake"}, PROMPTS, {"batch_size": 4}, tmp_path / "b", store=store, shards=2)
    from leaf_steps.tools.inspect_artifacts import inspect as inspect_artifact

    info = inspect_artifact(tmp_path / "b/points.parquet")
    assert info["requests"] == {
        "rows": 10,
        "reused": 6,
        "scored": 4,
        "failed": 0,
        "requests_sent": 4,
        "parts_written": 2,
    }
    shards = inspect_artifact(tmp_path / "b/points")
    assert sorted((s["requests"]["reused"], s["requests"]["scored"]) for s in shards["shards"]) == [(3, 2), (3, 2)]
    text = subprocess.run(
        [sys.executable, "-m", "leaf_steps.core.cli", "inspect", str(tmp_path / "b/points.parquet")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    ).stdout
    assert "teacher requests: 10 rows: 6 reused from the score store, 4 scored now (4 requests sent)" in text
