# The two commands of the README:
#   make run    install into .venv-run and start the chat example on the embedded log
#   make test   install into .venv-test (and the Debian packages the tests need) and run every test
# Each creates its own virtualenv; nothing else has to be installed by hand.

PYTHON ?= python3
RUN_VENV := .venv-run
TEST_VENV := .venv-test
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint clean

run: $(RUN_VENV)/.installed
	$(RUN_VENV)/bin/python -m examples.flask_chat --host $(HOST) --port $(PORT)

test: $(TEST_VENV)/.installed
	.ci/system-packages
	$(TEST_VENV)/bin/ruff check resumable_stream tests examples benchmarks
	$(TEST_VENV)/bin/mypy
	$(TEST_VENV)/bin/python -m pytest

$(RUN_VENV)/.installed: pyproject.toml
	.ci/venv $(PYTHON) $(RUN_VENV)
	$(RUN_VENV)/bin/pip install --quiet -e ".[flask]"
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	.ci/venv $(PYTHON) $(TEST_VENV)
	$(TEST_VENV)/bin/pip install --quiet -e ".[flask,django,server,dev]"
	touch $@

clean:
	rm -rf $(RUN_VENV) $(TEST_VENV) tests/js/node_modules *.egg-info
