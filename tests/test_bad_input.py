"""Bad input gets a clear message naming the key, file or line, found as early as it can be: config blocks
checked by the code that reads them, label files, offline KonIQ-10k, mixed artifact folders, and teacher
failures that a rerun would not fix."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from PIL import Image

from dataset_fixtures import AGIQA3K_HEADER, make_agiqa3k, make_koniq, write_csv
from fake_teacher import FakeTeacher
from leaf_steps import download_dataset, prepare_dataset
from leaf_steps.core.config import validate_config
from leaf_steps.core.config_checks import config_warnings, resolved_min_side
from leaf_steps.core.errors import ConfigError, InputError, LeafError, TeacherError
from leaf_steps.core.io import make_provenance, write_parquet
from leaf_steps.teachers import base
from leaf_steps.tools.inspect_artifacts import inspect
from scoring_helpers import points_rows, write_image_list

ROOT = Path(__file__).resolve().parents[1]


def config(name: str = "config/demo.yaml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def leaf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "leaf_steps.core.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


# --------------------------------------------------------------------------- every config block


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["teachers"]["standin"].update(patch_sise=32),
            "teachers.standin.patch_sise: unknown key for the niqe backend (did you mean 'patch_size'?)",
        ),
        (
            lambda c: c["teachers"]["tiny_qwen2vl"].update(batch_sise=4),
            "teachers.tiny_qwen2vl.batch_sise: unknown key for the transformers backend (did you mean 'batch_size'?)",
        ),
        (
            lambda c: c["teachers"].update(remote={"backend": "vllm", "model": "m", "max_concurency": 8}),
            "teachers.remote.max_concurency: unknown key for the vllm backend (did you mean 'max_concurrency'?)",
        ),
        (
            lambda c: c["teachers"].update(
                remote={"backend": "vllm", "model": "m", "launch": {"tensor_paralel_size": 2}}
            ),
            "teachers.remote.launch.tensor_paralel_size: unknown key (did you mean 'tensor_parallel_size'?)",
        ),
        (
            lambda c: c["teachers"]["standin"].update(patch_size=31),
            "teachers.standin.patch_size: must be an even integer >= 8",
        ),
        (
            lambda c: c["teachers"].update(remote={"backend": "vllm", "model": "m", "top_logprobs": 0}),
            "teachers.remote.top_logprobs: must be an integer >= 1",
        ),
        (lambda c: c["distill"].update(lamda_dis=0.5), "'lamda_dis': did you mean 'lambda_dis'?"),
    ],
)
def test_every_teacher_block_is_checked_by_its_backend(edit, message):
    cfg = config()
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value)


def folder_config(images: Path, **options) -> dict:
    cfg = config("config/folder_example.yaml")
    cfg["dataset"]["options"] = {"images_dir": str(images), **options}
    return cfg


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_dir": "x"}, "dataset.options.image_dir: not an option of dataset folder (did you mean 'images_dir'?)"),
        ({"mos_csv": 3}, "dataset.options.mos_csv: must be"),
    ],
)
def test_dataset_options_are_checked_by_the_adapter(tmp_path, options, message):
    cfg = folder_config(tmp_path, **options)
    if "image_dir" in options:
        del cfg["dataset"]["options"]["images_dir"]
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value)
    cfg = config("config/config.yaml")
    cfg["dataset"]["options"]["resolutoin"] = "512x384"
    with pytest.raises(
        ConfigError,
        match=r"options.resolutoin: not an option of dataset koniq10k \(did you mean "
        r"'resolution'\?\)",
    ):
        validate_config(cfg)


def test_adapters_read_only_declared_options():
    """An adapter reading an option it does not declare would let the config check and the code disagree."""
    import re

    from leaf_steps.datasets import DATASETS

    for name, adapter in DATASETS.items():
        source = Path(adapter.__file__).read_text()
        read = set(re.findall(r"\.option\(\s*\"([a-z_]+)\"", source))
        assert read <= set(adapter.OPTIONS), (name, read - set(adapter.OPTIONS))


def test_validation_does_not_import_torch():
    code = (
        "import sys, yaml; from leaf_steps.core.config import validate_config; "
        "validate_config(yaml.safe_load(open('config/demo.yaml'))); print('torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.stdout.strip() == "False", proc.stderr


def test_block_checks_stay_out_of_the_steps_code_hash():
    """Steps that read the schema (student) must not rerun when a teacher backend's code changes."""
    from leaf_steps.core.codehash import module_closure

    for step in (
        "distill",
        "calibrate",
        "prepare_dataset",
        "list_images",
        "score_points",
        "score_pairs",
        "gather_points",
        "gather_pairs",
    ):
        closure = module_closure(f"leaf_steps.{step}")
        assert not {"leaf_steps.teachers.vllm", "leaf_steps.teachers.hf", "leaf_steps.core.config_checks"} & set(
            closure
        )


def write_folder(root: Path, n: int, labelled: int) -> Path:
    rng = np.random.default_rng(0)
    rows = ["image,mos"]
    for i in range(n):
        root.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
        if i < labelled:
            rows.append(f"{i:03d}.png,{i}")
    (root.parent / "mos.csv").write_text("\n".join(rows) + "\n")
    return root.parent / "mos.csv"


def test_label_counts_per_ratio_are_checked_at_validation(tmp_path):
    csv = write_folder(tmp_path / "imgs", n=40, labelled=30)  # 6 test, 24 labelled training images
    cfg = folder_config(tmp_path / "imgs", mos_csv=str(csv))
    cfg["calibration"]["ratios"] = [0, 0.1, 0.3]
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert "calibration.ratios: 0.1 of the 24 labelled training images (30 rows in" in str(
        err.value
    ) and "is 2 image(s) (1 to calibrate on, 1 held out" in str(err.value)
    assert "0.3 of" not in str(err.value)  # 7 images: 5 to calibrate on, 2 held out
    cfg["calibration"]["ratios"] = [0, 0.3]
    validate_config(cfg)
    warnings = config_warnings(cfg)
    assert any("only 6 labelled test images: an SRCC of 0.80" in w for w in warnings), warnings


def test_validate_config_cli_prints_warnings_and_ok(tmp_path):
    csv = write_folder(tmp_path / "imgs", n=80, labelled=80)  # 16 test images
    cfg = folder_config(tmp_path / "imgs", mos_csv=str(csv))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = leaf("validate-config", str(tmp_path / "c.yaml"))
    assert proc.returncode == 0 and proc.stdout.strip() == f"{tmp_path / 'c.yaml'}: ok"
    assert (
        "warning: dataset: only 16 labelled test images: an SRCC of 0.80 measured on them has a 95% interval"
        in proc.stderr
    )
    cfg["teachers"]["standin"]["patch_sise"] = 32
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = leaf("validate-config", str(tmp_path / "c.yaml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: " in proc.stderr and "did you mean 'patch_size'?" in proc.stderr


def test_min_side_follows_the_teachers_unless_set():
    cfg = validate_config(config())
    assert resolved_min_side(cfg) == 32  # niqe patch 32, MLLMs 28: the 32 px floor
    cfg["teachers"]["standin"]["patch_size"] = 96
    assert resolved_min_side(cfg) == 96
    cfg["dataset"]["min_side"] = 10
    assert resolved_min_side(cfg) == 10


def test_workflow_start_refuses_a_typo_before_any_job(tmp_path):
    cfg = config()
    cfg["teachers"]["standin"]["patch_sise"] = 32
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "c.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode != 0
    assert (
        "LEAF config error: config: teachers.standin.patch_sise: unknown key for the niqe backend (did you mean "
        "'patch_size'?)" in proc.stderr
    )


# --------------------------------------------------------------------------- label files


def test_ragged_row_names_its_line_and_hides_polars_advice(tmp_path):
    fx = make_agiqa3k(tmp_path / "res" / "agiqa3k")
    label = fx.top / "data.csv"
    lines = label.read_text().splitlines()
    fields = lines[4].split(",")
    fields[1] = "a cat, sitting on a mat"  # an unquoted comma in the prompt
    lines[4] = ",".join(fields)
    label.write_text("\n".join(lines) + "\n")
    settings = json.dumps({"name": "agiqa3k"})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "leaf_steps.prepare_dataset",
            "--dataset",
            "agiqa3k",
            "--resources-dir",
            str(tmp_path / "res"),
            "--settings",
            settings,
            "--out",
            str(tmp_path / "m.parquet"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(
        rf"error: {re.escape(str(label))}: line 5 has 1\d fields but the header has "
        rf"{len(AGIQA3K_HEADER)} \(a field with a comma that is not in double quotes\?",
        proc.stderr,
    )
    assert "truncate_ragged_lines" not in proc.stderr


def test_missing_field_and_unclosed_quote_name_their_line(tmp_path):
    from leaf_steps.datasets.common import read_csv_strings

    write_csv(tmp_path / "a.csv", ["image", "mos"], [["a.png", "1"], ["b.png"], ["c.png", "3"]])
    with pytest.raises(InputError, match=r"a\.csv: line 3 has 1 fields but the header has 2 \(a missing field\?\)"):
        read_csv_strings(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text('image,mos\na.png,1\n"b.png,2\n' + "x" * 200_000 + "\n")
    with pytest.raises(InputError, match=r"b\.csv: line 3: not readable as CSV .*an unclosed double quote"):
        read_csv_strings(tmp_path / "b.csv")


# --------------------------------------------------------------------------- offline KonIQ-10k


def test_offline_koniq_without_the_split_file_says_where_to_put_it(tmp_path):
    fx = make_koniq(tmp_path / "server")
    downloads = tmp_path / "res/koniq10k/downloads"
    downloads.mkdir(parents=True)
    for name in ("koniq10k_512x384.zip", "koniq10k_scores_and_distributions.zip"):
        (downloads / name).write_bytes((fx.archive_dir / name).read_bytes())
    settings = {
        "name": "koniq10k",
        "options": {
            "resolution": "512x384",
            "split_url": "http://127.0.0.1:9/sets.csv",
            "download_retries": 0,
            "retry_wait_s": 0,
        },
    }
    with pytest.raises(LeafError) as err:
        download_dataset.run(
            [
                "--dataset",
                "koniq10k",
                "--resources-dir",
                str(tmp_path / "res"),
                "--settings",
                json.dumps(settings),
                "--out-marker",
                str(tmp_path / "marker.json"),
            ]
        )
    message = str(err.value)
    assert f"place it at {downloads / 'koniq10k_distributions_sets.csv'}" in message
    assert "dataset.options.split: random" in message
    # With the random split the same offline files are enough.
    settings["options"]["split"] = "random"
    download_dataset.run(
        [
            "--dataset",
            "koniq10k",
            "--resources-dir",
            str(tmp_path / "res"),
            "--settings",
            json.dumps(settings),
            "--out-marker",
            str(tmp_path / "marker.json"),
        ]
    )
    df = prepare_dataset.run(
        [
            "--dataset",
            "koniq10k",
            "--resources-dir",
            str(tmp_path / "res"),
            "--settings",
            json.dumps(settings),
            "--out",
            str(tmp_path / "m.parquet"),
        ]
    )
    assert df.height == 40


# --------------------------------------------------------------------------- leaf inspect


def test_inspect_mixed_folder_is_a_clean_message(tmp_path):
    write_parquet(
        pl.DataFrame({"image_id": ["a"], "teacher_score": [3.0]}),
        tmp_path / "points.parquet",
        make_provenance("gather_points"),
    )
    write_parquet(
        pl.DataFrame({"pair_id": [1], "p_a": [0.5]}),
        tmp_path / "pairs" / "1-of-1.parquet",
        make_provenance("score_pairs"),
    )
    proc = leaf("inspect", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "schema lengths differ" not in proc.stderr
    assert f"error: {tmp_path}: holds 2 kinds of artifact (different columns)" in proc.stderr
    assert str(tmp_path / "points.parquet") in proc.stderr and str(tmp_path / "pairs/1-of-1.parquet") in proc.stderr


def test_inspect_shards_shows_each_shard(tmp_path):
    for k, n in ((1, 5), (2, 3)):
        write_parquet(
            pl.DataFrame({"image_id": [f"{k}-{i}" for i in range(n)]}),
            tmp_path / f"{k}-of-2.parquet",
            make_provenance("score_points", teacher="t", shard=f"{k}-of-2", summary={"rows": n}),
        )
    info = inspect(tmp_path)
    assert info["rows"] == 8 and info["common_provenance"]["teacher"] == "t"
    assert [(Path(s["file"]).name, s["rows"], s["provenance"]["shard"]) for s in info["shards"]] == [
        ("1-of-2.parquet", 5, "1-of-2"),
        ("2-of-2.parquet", 3, "2-of-2"),
    ]
    text = leaf("inspect", str(tmp_path)).stdout
    assert "provenance shared by all 2 shards" in text and "1-of-2.parquet" in text and "2-of-2" in text


# --------------------------------------------------------------------------- failures a rerun will not fix


@pytest.fixture()
def fake_backend(monkeypatch):
    monkeypatch.setitem(base.BACKENDS, "fake", "fake_teacher:FakeTeacher")
    FakeTeacher.calls, FakeTeacher.fail_ids, FakeTeacher.kill_after_calls = [], set(), None


def test_scoring_names_images_that_will_fail_again(tmp_path, fake_backend):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    paths[3].write_bytes(paths[3].read_bytes()[:60])  # truncated: fails in every stage
    images = write_image_list(
        pl.DataFrame({"image_id": [f"i{i}" for i in range(10)], "path": [str(p) for p in paths]}),
        tmp_path / "images.parquet",
    )
    FakeTeacher.fail_ids = {"i3", "i7"}  # i3: its file is broken; i7: a transient failure (the file is fine)
    scoring = {"batch_size": 4, "max_error_fraction": 0.05}
    with pytest.raises(TeacherError) as err:
        points_rows(images, {"backend": "fake"}, {"point": "?", "pair": "?"}, scoring, tmp_path)
    message = str(err.value)
    assert "1 row(s) failed because 1 image(s) cannot be used, and will fail again on a rerun" in message
    assert f"{paths[3]}: cannot decode image" in message and "Fix or remove these files" in message
    assert "1 row(s) failed otherwise" in message and "rerun to ask only for the failed requests" in message
    FakeTeacher.fail_ids = {"i3"}  # only the broken file: nothing a rerun could fix
    with pytest.raises(TeacherError) as err:
        points_rows(images, {"backend": "fake"}, {"point": "?", "pair": "?"}, scoring, tmp_path)
    assert "rerun to ask" not in str(err.value) and str(paths[3]) in str(err.value)


def test_folder_with_niqe_needs_no_pristine_dir(tmp_path):
    """Outside the demo the stand-in teacher fits NIQE on scikit-image's bundled photos by default."""
    from leaf_steps.fit_niqe import fit_niqe

    model = fit_niqe(None, {"backend": "niqe", "patch_size": 32}, tmp_path / "niqe.npz")
    assert model.n_images >= 10 and (tmp_path / "niqe.npz").is_file()
    cfg = copy.deepcopy(config("config/folder_example.yaml"))
    assert "pristine_dir" not in cfg["teachers"]["standin"]
