"""Security: an API key is written nowhere, hostile archives cannot write outside the dataset folder, and
nothing unpickles a user-supplied file (checkpoints are safetensors only)."""

from __future__ import annotations

import ast
import io
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fake_vllm_server import Behaviour, FakeVllmServer
from leaf_steps.core.errors import InputError
from leaf_steps.datasets.common import extract_archive

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-leaf-test-7f3a9c1e5b2d4f60a8e1"
KEY_ENV = "LEAF_TEST_API_KEY"
MODEL = "fake/vlm"


# --------------------------------------------------------------------------- API keys


def key_run_config(images: Path, base_url: str) -> dict:
    cfg = yaml.safe_load((ROOT / "config/folder_example.yaml").read_text())
    cfg["run_name"] = "keyed"
    cfg["dataset"]["options"] = {"images_dir": str(images), "mos_csv": str(images.parent / "mos.csv")}
    cfg["teacher"] = "remote"
    cfg["teachers"] = {
        "remote": {
            "backend": "vllm",
            "model": MODEL,
            "base_url": base_url,
            "api_key_env": KEY_ENV,
            "request_timeout_s": 20.0,
            "max_concurrency": 4,
            "backoff_s": 0.01,
        }
    }
    cfg["student"] |= {"resize": 40, "crop": 32}
    cfg["distill"] |= {"epochs": 1, "batch_size": 8, "pair_batch_size": 8}
    cfg["calibration"] |= {"ratios": [0, 0.3], "seeds": [0], "epochs": 1, "batch_size": 4}
    return cfg


def write_images(folder: Path, n: int = 24) -> None:
    rng = np.random.default_rng(3)
    rows = ["image,mos"]
    for i in range(n):
        arr = np.clip(rng.normal(40 + 8 * i, 30, (48, 64, 3)), 0, 255).astype(np.uint8)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{i / 4:.2f}")
    (folder.parent / "mos.csv").write_text("\n".join(rows) + "\n")


def snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        KEY_ENV: KEY,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(var, None)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env, cwd=workdir)


def files_holding(root: Path, secret: str) -> list[Path]:
    needle = secret.encode()
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def keyed_run(tmp_path: Path, *targets: str, report: bool = False) -> tuple[Path, dict]:
    write_images(tmp_path / "data/images")
    with FakeVllmServer(MODEL, Behaviour(api_key=KEY, image_limit=2)) as server:
        cfg = key_run_config(tmp_path / "data/images", server.base_url)
        configfile = tmp_path / "keyed.yaml"
        configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))
        proc = snakemake(tmp_path, configfile, *targets)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
        if report:
            proc = snakemake(tmp_path, configfile, "--report", str(tmp_path / "report.html"))
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
        stats = server.stats()
    return tmp_path, stats


def test_api_key_is_written_nowhere_by_scoring(tmp_path):
    run = "results/keyed/teacher/remote"
    workdir, stats = keyed_run(tmp_path, f"{run}/points.parquet", f"{run}/pairs.parquet")
    # The key was really in use: every request carried it, and the server answered.
    assert stats["auth_headers"] == [f"Bearer {KEY}"] and stats["answers"] >= 24
    assert (workdir / ".snakemake").is_dir() and any((workdir / "results/keyed/logs").rglob("*.log"))
    assert files_holding(workdir, KEY) == []


@pytest.mark.slow
def test_api_key_is_written_nowhere_by_a_whole_run_and_its_report(tmp_path):
    workdir, stats = keyed_run(tmp_path, report=True)
    assert stats["auth_headers"] == [f"Bearer {KEY}"]
    assert (workdir / "report.html").is_file() and (workdir / "results/keyed/summary/table.md").is_file()
    assert files_holding(workdir, KEY) == []


# --------------------------------------------------------------------------- hostile archives


def outside_untouched(tmp_path: Path, dest: Path) -> None:
    """Nothing below tmp_path but the archive and the dataset folder (and the sentinel folder, still empty)."""
    assert not any((tmp_path / "outside").iterdir())
    allowed = {tmp_path / "outside", tmp_path / "archives", dest.parent}
    for path in tmp_path.rglob("*"):
        assert path in allowed or path.parent == tmp_path / "archives" or path.is_relative_to(dest), path
    for path in dest.rglob("*"):
        assert not path.is_symlink() or path.resolve().is_relative_to(dest.resolve()), path


@pytest.fixture()
def places(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "archives").mkdir()
    return tmp_path, tmp_path / "resources/agiqa3k"


def test_zip_with_parent_and_absolute_paths_stays_inside(places):
    tmp_path, dest = places
    archive = tmp_path / "archives/evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../outside/escaped.txt", "parent path")
        zf.writestr(str(tmp_path / "outside/absolute.txt"), "absolute path")
        zf.writestr("data/../../../outside/nested.txt", "nested parent path")
        link = zipfile.ZipInfo("data/link")  # a symlink entry: zipfile writes its target as plain text
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, str(tmp_path / "outside"))
        zf.writestr("data/ok.txt", "fine")
    extract_archive(archive, dest)
    outside_untouched(tmp_path, dest)
    assert (dest / "data/ok.txt").read_text() == "fine"
    assert not (dest / "data/link").is_symlink()


@pytest.mark.parametrize("member", ["parent", "absolute", "symlink_out", "symlink_abs", "hardlink_out"])
def test_tar_escaping_the_folder_is_refused_or_kept_inside(places, member):
    tmp_path, dest = places
    archive = tmp_path / "archives/evil.tar.gz"
    target = tmp_path / "outside/escaped.txt"
    with tarfile.open(archive, "w:gz") as tf:
        ok = tarfile.TarInfo("data/ok.txt")
        ok.size = 4
        tf.addfile(ok, io.BytesIO(b"fine"))
        if member in ("parent", "absolute"):
            info = tarfile.TarInfo("../../outside/escaped.txt" if member == "parent" else str(target))
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
        else:
            info = tarfile.TarInfo("data/door")
            info.type = tarfile.LNKTYPE if member == "hardlink_out" else tarfile.SYMTYPE
            info.linkname = {
                "symlink_out": "../../../outside",
                "symlink_abs": str(tmp_path / "outside"),
                "hardlink_out": str(target),
            }[member]
            tf.addfile(info)
            follow = tarfile.TarInfo("data/door/escaped.txt")  # writes through the link if it was made
            follow.size = 4
            tf.addfile(follow, io.BytesIO(b"evil"))
    if member == "absolute":  # tarfile's data filter strips the leading "/": the file lands inside
        extract_archive(archive, dest)
        outside_untouched(tmp_path, dest)
        assert (dest / str(target).lstrip("/")).read_bytes() == b"evil"
        return
    with pytest.raises(InputError, match=rf"{archive.name}: cannot be extracted"):
        extract_archive(archive, dest)
    outside_untouched(tmp_path, dest)
    assert not (dest / "data").exists()  # a refused archive leaves nothing half-extracted


# --------------------------------------------------------------------------- no unpickling


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_nothing_unpickles_a_file():
    """No torch.load / pickle / joblib anywhere in the package; np.load only with allow_pickle=False; model
    weights through from_pretrained only with use_safetensors=True (student checkpoints: safetensors.load_file)."""
    offences = []
    for path in sorted((ROOT / "leaf_steps").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "dill", "joblib", "cloudpickle") for n in names):
                    offences.append(f"{path}:{node.lineno}: imports a pickle library")
                if isinstance(node, ast.ImportFrom) and node.module == "torch" and "load" in names:
                    offences.append(f"{path}:{node.lineno}: imports torch.load")
        for call, name in _calls(tree):
            keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
            where = f"{path.relative_to(ROOT)}:{call.lineno}: {name}"
            if name == "torch.load" or name.endswith(".torch.load"):
                offences.append(f"{where} (torch.load unpickles)")
            if name in ("np.load", "numpy.load") and keywords.get("allow_pickle") != "False":
                offences.append(f"{where} without allow_pickle=False")
            if name.endswith("Model.from_pretrained") or "ForImageTextToText.from_pretrained" in name:
                if keywords.get("use_safetensors") != "True":
                    offences.append(f"{where} without use_safetensors=True")
    assert offences == []
    student = (ROOT / "leaf_steps/training/models.py").read_text()
    assert "from safetensors.torch import load_file" in student
