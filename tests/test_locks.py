"""The pinned environments (`make lock`) agree with pyproject.toml's ranges and with each other, `make demo` /
`make test` install from them, and every artifact's provenance names the lock."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import polars as pl
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from leaf_steps.core.io import library_versions, make_provenance, read_provenance, write_parquet

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
LOCK_VLLM = ROOT / "requirements" / "lock-vllm.txt"

# "name==version ; marker \" starts an entry; hashes and "# via" comments follow on indented lines.
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def read_lock(path: Path) -> dict[str, list[tuple[str, str | None]]]:
    """{package: [(version, marker or None), ...]} (a package has several entries when markers fork it)."""
    entries: dict[str, list[tuple[str, str | None]]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith((" ", "#")):
            continue
        m = ENTRY.match(line)
        assert m, f"{path.name}:{n}: not a pinned requirement: {line!r}"
        entries.setdefault(canonicalize_name(m.group(1)), []).append((m.group(2), m.group(3)))
    assert entries, f"{path.name}: no entries"
    return entries


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def check_satisfies(lock_path: Path, requirements: list[str]) -> None:
    """Every requirement is locked, and every locked version of it lies in its range."""
    lock = read_lock(lock_path)
    problems = []
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name not in lock:
            problems.append(f"{text}: not in {lock_path.name}")
            continue
        problems += [
            f"{text}: {lock_path.name} pins {version}"
            for version, _ in lock[name]
            if not req.specifier.contains(version, prereleases=True)
        ]
    assert not problems, "\n".join(problems)


def test_lock_satisfies_pyproject_ranges():
    extras = project()["optional-dependencies"]
    check_satisfies(LOCK, project()["dependencies"] + extras["dev"])


def test_vllm_lock_satisfies_pyproject_ranges():
    extras = project()["optional-dependencies"]
    check_satisfies(LOCK_VLLM, project()["dependencies"] + extras["vllm"])


def test_locks_resolved_under_the_constraints_and_hash_every_entry():
    caps = [
        Requirement(line)
        for line in (ROOT / "requirements/constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert caps
    for path in (LOCK, LOCK_VLLM, *sorted((ROOT / "envs").glob("*.pip-lock.txt"))):
        lock = read_lock(path)
        for cap in caps:
            for version, _ in lock.get(canonicalize_name(cap.name), []):
                assert cap.specifier.contains(version), f"{path.name}: {cap.name}=={version} breaks {cap}"
        # pip checks every file against these (hash-checking mode): a lock line without them is an error there.
        text = path.read_text()
        assert text.count("--hash=sha256:") >= sum(map(len, lock.values())), path.name


def test_each_env_pip_lock_pins_its_env_and_agrees_with_the_project_lock():
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        pip_lock = env.with_suffix(".pip-lock.txt")
        assert pip_lock.is_file(), f"{env.name} has no {pip_lock.name}: run `make lock`"
        deps = yaml.safe_load(env.read_text())["dependencies"]
        reqs = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
        check_satisfies(pip_lock, reqs)
        # teacher-vllm is resolved with the vllm lock (vLLM pins its own torch), every other env with the main one.
        base = read_lock(LOCK_VLLM if any(Requirement(r).name == "vllm" for r in reqs) else LOCK)
        for name, pins in read_lock(pip_lock).items():
            assert name in base, f"{pip_lock.name}: {name} is in no project lock"
            # Same versions; markers may differ (a smaller env forks less).
            versions, base_versions = {v for v, _ in pins}, {v for v, _ in base[name]}
            assert versions <= base_versions, f"{pip_lock.name}: {name} {pins}, project lock {base[name]}"


def test_lock_pins_torch_for_linux_x86_64_from_pypi():
    # The PyPI torch wheel for Linux x86_64 is the CUDA build (nvidia-* wheels beside it) and runs on CPU-only
    # hosts too; the lock must carry those wheels for Linux or a GPU host installing it gets no CUDA runtime.
    lock = read_lock(LOCK)
    linux = {
        "sys_platform": "linux",
        "platform_machine": "x86_64",
        "python_full_version": "3.11.7",
        "python_version": "3.11",
        "platform_system": "Linux",
        "implementation_name": "cpython",
    }
    assert [v for v, marker in lock["torch"] if marker is None or Marker(marker).evaluate(linux)]
    cuda = [
        n
        for n, pins in lock.items()
        if n.startswith("nvidia-cuda-runtime") and any(m is None or Marker(m).evaluate(linux) for _, m in pins)
    ]
    assert cuda, "no CUDA runtime wheel locked for Linux x86_64"


def test_make_installs_from_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    stamp_rule = re.search(r"^\$\(STAMP\):(.*)$", makefile, re.M)
    assert stamp_rule and "$(LOCK)" in stamp_rule.group(1), "the venv stamp must depend on the lock"
    assert re.search(r"^LOCK := requirements/lock\.txt$", makefile, re.M)
    assert "pip install --quiet -r $(LOCK)" in makefile and "--no-deps -e ." in makefile


def test_provenance_records_the_lock_hash(tmp_path):
    expected = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    assert library_versions()["lock_sha256"] == expected
    out = write_parquet(pl.DataFrame({"x": [1]}), tmp_path / "a.parquet", make_provenance("test_step", value=3))
    prov = read_provenance(out)
    assert prov["versions"]["lock_sha256"] == expected
    assert prov["value"] == 3 and prov["versions"]["leaf"]
