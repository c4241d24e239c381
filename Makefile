# The two commands a newcomer needs: `make run` and `make test`.
# Both create .venv and install payhooks into it on first use (or when
# pyproject.toml changes); nothing else needs installing by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,test]'
	touch $(STAMP)

run: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/payhooks run

# Two pytest workers, one test file each at a time; each starts its own database
# and Redis. Then the tests marked `serial` (they measure latency) run alone.
# TEST_WORKERS=0 runs the first part in one process (a single test, a debugger).
# Exit status 5 is pytest's "no test selected": fine for one part, not for both.
TEST_WORKERS ?= 2

test: $(STAMP)
	@export PATH="$(BIN):$$PATH"; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial" $(PYTEST_ARGS); parallel=$$?; \
	$(BIN)/python -m pytest -m serial $(PYTEST_ARGS); alone=$$?; \
	for rc in $$parallel $$alone; do [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc; done; \
	[ $$parallel -eq 0 ] || [ $$alone -eq 0 ]

bench: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m bench $(BENCH_ARGS)

# The chaos soak (bench/soak.py): 10,000 events while workers, the receiver, Redis and
# PostgreSQL connections are killed at random. Minutes, not in CI (tests/fault/test_soak.py is).
soak: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m bench soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
