# Two entry points for a fresh Debian 12 machine (as root):
#   make demo   bring up the example lab cluster and show its status
#   make test   run the whole test suite
# Both install what is missing first (scripts/setup.sh).

VENV := .venv
EDGECTL := $(VENV)/bin/edgectl
PYTEST_ARGS ?=
DEMO_TOPOLOGY ?= lab/examples/nat-edge.yaml

.PHONY: setup demo demo-down test bench clean

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh $(DEMO_TOPOLOGY)

demo-down: setup
	@$(EDGECTL) lab down --all

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

clean:
	-$(EDGECTL) lab down --all
	rm -rf $(VENV) .pytest_cache build *.egg-info
