"""Print the pip requirements of a conda env file (envs/*.yaml), one a line, for `make lock` to resolve."""

import sys
from pathlib import Path

import yaml


def pip_requirements(path: Path) -> list[str]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    if len(sections) != 1:
        raise SystemExit(f"{path}: expected one pip: section under dependencies, found {len(sections)}")
    return sections[0]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: env_requirements.py envs/NAME.yaml")
    print("\n".join(pip_requirements(Path(sys.argv[1]))))
