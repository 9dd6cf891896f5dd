# The two commands of the README:
#   make run    install into .venv-run and start the chat example on the embedded log
#               (HOST=, PORT= to listen elsewhere; ARGS= for more options, e.g. ARGS='--gunicorn --workers 2')
#   make test   install into .venv-test (and the Debian packages the tests need) and run every test
#               (the reliability suite among them, bounded: tests/reliability, RELIABILITY_SIZE=bounded)
# Each creates its own virtualenv; nothing else has to be installed by hand.
#   make dist   build the sdist and the wheel into $(DIST) (default dist/)
#   make screenshots   take the README's picture of the chat example again (docs/flask_chat.png)
#   make reliability   the reliability suite in full (RELIABILITY_SIZE=full), then docs/reliability.md from its results

PYTHON ?= python3
RUN_VENV := .venv-run
TEST_VENV := .venv-test
DIST_VENV := .venv-dist
HOST ?= 127.0.0.1
PORT ?= 8000
ARGS ?=
DIST ?= dist
PIP_QUIET := --quiet --quiet
# Editable installs in setuptools' compat mode: a .pth file naming the checkout, as a flat layout
# needs (the default, a meta-path finder, prints a notice about folders named like the package).
EDITABLE := --config-settings editable_mode=compat -e

.PHONY: run test lint clean dist screenshots reliability

run: $(RUN_VENV)/.installed
	$(RUN_VENV)/bin/python -m examples.flask_chat --host $(HOST) --port $(PORT) $(ARGS)

dist: $(DIST_VENV)/.installed
	rm -rf $(DIST)
	$(DIST_VENV)/bin/python -m build --outdir $(DIST) .

screenshots: $(TEST_VENV)/.installed
	UPDATE_SCREENSHOTS=1 $(TEST_VENV)/bin/python -m pytest tests/test_browser.py -k screenshot

test: $(TEST_VENV)/.installed
	.ci/system-packages
	$(TEST_VENV)/bin/ruff check resumable_stream tests examples benchmarks
	$(TEST_VENV)/bin/mypy
	$(TEST_VENV)/bin/python -m pytest

# The report is written whatever the outcome (it shows what failed); make fails if a test did.
reliability: $(TEST_VENV)/.installed
	.ci/system-packages
	RELIABILITY_SIZE=full $(TEST_VENV)/bin/python -m pytest -m reliability tests/reliability; \
	status=$$?; $(TEST_VENV)/bin/python -m tests.reliability.report && exit $$status

$(RUN_VENV)/.installed: pyproject.toml
	.ci/venv $(PYTHON) $(RUN_VENV)
	$(RUN_VENV)/bin/pip install $(PIP_QUIET) $(EDITABLE) ".[flask]" gunicorn gevent
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	.ci/venv $(PYTHON) $(TEST_VENV)
	$(TEST_VENV)/bin/pip install $(PIP_QUIET) $(EDITABLE) ".[flask,django,server,dev]"
	touch $@

$(DIST_VENV)/.installed:
	.ci/venv $(PYTHON) $(DIST_VENV)
	$(DIST_VENV)/bin/pip install $(PIP_QUIET) build
	touch $@

clean:
	rm -rf $(RUN_VENV) $(TEST_VENV) $(DIST_VENV) tests/js/node_modules tests/ai_sdk_js/node_modules examples/ai_sdk_chat/client/node_modules dist build *.egg-info
