# The two commands of the README: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
DEMO_CONFIG ?= config/demo.yaml
CORES ?= 2

.PHONY: demo test mutate env lint report clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
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
	$(BIN)/python -m pip install --quiet -e '.[dev,mutate]'
	touch $(MUTATE_STAMP)

mutate: $(MUTATE_STAMP)
	$(BIN)/python scripts/mutation.py

lint: $(STAMP)
	$(BIN)/snakemake --lint --configfile $(DEMO_CONFIG)

report: $(STAMP)
	$(BIN)/snakemake --configfile $(DEMO_CONFIG) --report results/demo/report.html

clean-demo:
	rm -rf results/demo
