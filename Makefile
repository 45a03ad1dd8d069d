# Two entry points a newcomer needs (see README): `make demo` and `make test`.
# Each creates .venv when missing (a no-op when it is present and up to date).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_venv.sh
	PY=$(PY) bash scripts/setup_venv.sh $(VENV)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python evaluate/compare_planners.py --family test --seeds 1 --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

# Every test, the slow ones (@pytest.mark.slow, left out of `make test`) included.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m ""

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python evaluate/bench_env.py
