"""The conda env files agree with the package's declared dependencies."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", req.strip())
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject() -> tuple[dict[str, str], dict[str, str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = dict(_split(r) for r in project["dependencies"])
    extras = dict(_split(r) for reqs in project["optional-dependencies"].values() for r in reqs)
    return base, extras


def _env_pip(path: Path) -> dict[str, str]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    return dict(_split(r) for r in pip)


def test_env_requirements_match_pyproject():
    base, extras = _pyproject()
    declared = base | extras
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert envs, "no env files"
    covered = set()
    for env in envs:
        for name, spec in _env_pip(env).items():
            assert name in declared, f"{env.name}: {name} is not a dependency in pyproject.toml"
            assert spec == declared[name], f"{env.name}: {name}{spec} but pyproject.toml says {name}{declared[name]}"
            covered.add(name)
    # Everything the steps import is in some env; snakemake itself runs outside the job envs.
    missing = set(base) - covered - {"snakemake"}
    assert not missing, f"dependencies in no env file: {sorted(missing)}"


def test_every_rule_names_an_existing_env():
    rules = "\n".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk"))
    for name in re.findall(r"envs/([a-z\-]+\.yaml)", rules):
        assert (ROOT / "envs" / name).is_file(), name
