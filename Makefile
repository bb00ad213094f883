# The two commands of the README: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
DEMO_CONFIG ?= config/demo.yaml
CORES ?= 2

.PHONY: demo test mutate env lint format lock lock-conda report clean-demo

# The venv installs the lock (exact versions, hash-checked), then the package itself without dependencies, so
# `make demo`/`make test` run on the versions in requirements/lock.txt whatever PyPI serves today. A changed
# lock or pyproject.toml reinstalls; packages dropped from the lock stay in an existing .venv (rm -rf .venv for
# an exact one).
LOCK := requirements/lock.txt
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --configfile $(DEMO_CONFIG) --cores $(CORES)
	@echo
	@cat results/demo/summary/table.md
	@echo
	@echo "Figures: results/demo/figures/ (label_efficiency, teacher_vs_mos, training_curves, pair_confidence); HTML report: make report"
	@$(BIN)/python scripts/readme_demo_table.py --table results/demo/summary/table.md --exit-zero
	@echo "Exported student: results/demo/export/ (model card: README.md). Score a folder with it:"
	@echo "  $(BIN)/leaf predict --model results/demo/export results/demo/dataset/images --out results/demo/scores.parquet"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Mutation testing of the modules that compute numbers (tens of minutes; not part of `make test`):
# kill rate per module, survivors not documented as equivalent in docs/mutation.md. Config: pyproject.toml.
MUTATE_STAMP := $(VENV)/.installed-mutate
$(MUTATE_STAMP): $(STAMP)
	# What the lock installed already satisfies the ranges and stays; only mutmut and its own dependencies are added.
	$(BIN)/python -m pip install --quiet -e '.[dev,mutate]'
	touch $(MUTATE_STAMP)

mutate: $(MUTATE_STAMP)
	$(BIN)/python scripts/mutation.py

# ruff (rules and format: pyproject.toml [tool.ruff]), snakefmt (Snakefile and rules: [tool.snakefmt]) and
# Snakemake's own linter. `make format` applies the formatters and ruff's safe fixes (scripts/lint_fix.sh).
SNAKE_FILES := Snakefile $(wildcard workflow/rules/*.smk)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check $(SNAKE_FILES)
	$(BIN)/snakemake --lint --configfile $(DEMO_CONFIG)

format: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/lint_fix.sh

# Refresh the locks from pyproject.toml's ranges (with requirements/constraints.txt) against PyPI: universal
# (every OS, CPU and Python >= 3.11, by environment markers), with every file's sha256. requirements/lock.txt:
# the package with the dev extra (make demo/test/lint); requirements/lock-vllm.txt: the package with the vllm
# extra (GPU hosts serving the teacher; vLLM pins its own torch); envs/NAME.pip-lock.txt: the pip part of each
# conda env, resolved with the matching project lock as constraints so a package has one version everywhere.
# uv keeps each existing pin that still fits (a changed range moves only what it must); `make lock UPGRADE=1`
# moves every package to the newest version allowed.
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)
lock: $(STAMP)
	$(UV_COMPILE) pyproject.toml --extra dev -c requirements/constraints.txt -o requirements/lock.txt
	$(UV_COMPILE) pyproject.toml --extra vllm -c requirements/constraints.txt -o requirements/lock-vllm.txt
	for env in core student teacher; do \
	  $(BIN)/python scripts/env_requirements.py envs/$$env.yaml | $(UV_COMPILE) - -c requirements/lock.txt \
	    -o envs/$$env.pip-lock.txt || exit 1; done
	$(BIN)/python scripts/env_requirements.py envs/teacher-vllm.yaml | $(UV_COMPILE) - \
	  -c requirements/lock-vllm.txt -o envs/teacher-vllm.pip-lock.txt

# The conda side of envs/*.yaml (python, pip) with conda-lock, on a host that reaches the conda channels (the
# project's own machines do not: these files are not in the repository yet). conda-lock also resolves the envs'
# pip sections from their ranges; envs/NAME.pip-lock.txt remain the pinned pip part.
lock-conda: $(STAMP)
	for env in core student teacher teacher-vllm; do \
	  $(BIN)/uv tool run --from conda-lock==4.0.3 conda-lock lock --file envs/$$env.yaml --platform linux-64 \
	    --lockfile envs/$$env.conda-lock.yml || exit 1; done

report: $(STAMP)
	$(BIN)/snakemake --configfile $(DEMO_CONFIG) --report results/demo/report.html

clean-demo:
	rm -rf results/demo
