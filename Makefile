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

test: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m bench $(BENCH_ARGS)

# The chaos soak (bench/soak.py): 10,000 events while workers, the receiver, Redis and
# PostgreSQL connections are killed at random. Minutes, not in CI (tests/fault/test_soak.py is).
soak: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m bench soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
