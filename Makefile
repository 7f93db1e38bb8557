# The two commands a new user needs: `make run` and `make test`.
PORT ?= 8000
HOST ?= 127.0.0.1
DATA ?= data
PYTEST_ARGS ?=

.PHONY: run test lint bench-quick clean

run:
	@scripts/setup.sh run
	.venv/bin/minewatch run --host $(HOST) --port $(PORT) --data-dir $(DATA)

test:
	@scripts/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check .

bench-quick:
	@scripts/setup.sh test
	.venv/bin/python bench/latency.py --quick

clean:
	rm -rf .venv data artifacts .pytest_cache
