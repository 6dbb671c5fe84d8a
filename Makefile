# The two commands of the README: `make demo` and `make test`. Each creates the virtualenv
# (.venv) and installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
export RAY_USAGE_STATS_ENABLED = 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER = 0
export AWS_EC2_METADATA_DISABLED = true

# pyproject.toml holds compatible ranges; constraints.txt the exact known-good set we test
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	# torch first and pinned: this machine holds the CPU wheel; an unpinned torch pulls CUDA
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# TotalSegmentator only for its bundled CT atlas (dev corpus): its own deps are not needed
	$(PY) -m pip install -q --no-deps -c constraints.txt TotalSegmentator==2.18.0
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/lowrank-batch demo

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) -m benchmarks

# Retrain the shipped weights (about 21 min base + 4 x 7 min adapters on 2 CPU cores; never run by CI).
# Then pin the printed digests in lowrank_batch/weights/defaults.py.
train: venv
	$(PY) jobs/build_corpus.py --out corpus
	$(PY) jobs/train.py base --corpus corpus
	for m in ct mr xray natural; do $(PY) jobs/train.py adapter --modality $$m --corpus corpus || exit 1; done

.PHONY: venv demo test bench train
