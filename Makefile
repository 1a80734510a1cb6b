# tinrec: `make demo` trains TIN on the generated dataset; `make test` runs the test suite.
VENV ?= .venv
STAMP := $(VENV)/.tinrec-setup
ACTIVATE := . $(VENV)/bin/activate &&

.PHONY: setup demo test test-fast clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup_env.sh
	bash tools/setup_env.sh $(VENV)
	touch $(STAMP)

# The main job on its built-in default: generates data/generated/default if missing, trains into runs/demo
# (re-running continues or re-reports that run), prints the test metrics table.
demo: $(STAMP)
	$(ACTIVATE) tinrec train configs/default.yaml --resume

test: $(STAMP)
	$(ACTIVATE) python -m pytest -q -ra

test-fast: $(STAMP)
	$(ACTIVATE) python -m pytest -q -m "not integration"

clean-demo:
	rm -rf runs/demo
