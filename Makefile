# Two entry points: `make demo` (set up, get Fashion-MNIST, train the default recipe, print test accuracy and
# the report path) and `make test`. One .venv serves both.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH ?= torch==2.14.1 torchvision==0.29.1
RUN := runs/demo-$(shell date +%Y%m%d-%H%M%S)
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test lint fmnist bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,export]'
	touch $(STAMP)

# Debian's package where apt works (as root); otherwise `data.download=true` below fetches it with md5 checks.
fmnist:
	@test -d $(FMNIST) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; }; } || \
	  echo "Debian's dataset-fashion-mnist is not available; resnetlab will download Fashion-MNIST instead"

demo: $(STAMP) fmnist
	$(VENV)/bin/resnetlab train --recipe fmnist-fast --out $(RUN) --set data.download=true
	@$(VENV)/bin/resnetlab report $(RUN) | sed 's/^/report: /'

# The 15 slowest tests, then the whole command's wall time (pytest's own total leaves out its start-up).
# Two pytest-xdist workers, one CPU each (tests/conftest.py); `make test XDIST=` runs in one process.
XDIST ?= -n 2 --dist loadscope
test: $(STAMP)
	@start=$$(date +%s); $(PY) -m pytest -q --durations=15 $(XDIST); rc=$$?; \
	  echo "make test: $$(( $$(date +%s) - start )) s wall in total (exit $$rc)"; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) bench/loader.py
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
