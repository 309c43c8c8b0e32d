# The two commands of a fresh machine (Debian/Ubuntu with python3 and make):
#   make demo   sets up, then runs the main job offline: data, distillation, KS-mini evaluation, the table
#   make test   sets up, then lint and the test suite
# Both are idempotent: a second run reuses the environment, the data and a finished student.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
THREADS := $(shell nproc 2>/dev/null || echo 1)
# the torch release the set-up installs; pip takes a local CPU wheel of it where one lies (override: make TORCH=...)
TORCH ?= 2.13.0
DATA := data/superb-mini
STUDENT := outputs/demo
SCORES := outputs/demo-ks

.PHONY: demo test setup system

system:  # what pip cannot install: espeak-ng (the demo's voices) and the venv module
	@missing=(); command -v espeak-ng >/dev/null || missing+=(espeak-ng); \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv); \
	if [ $${#missing[@]} -gt 0 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $${missing[*]} with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$${missing[@]}" >/dev/null; \
	  else \
	    echo "missing: $${missing[*]}; install it (e.g. sudo apt-get install -y $${missing[*]}) and run make again"; \
	    exit 1; \
	  fi; \
	fi

$(BIN)/.installed: pyproject.toml | system
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" "torch==$(TORCH)"
	$(BIN)/python -m pip install --quiet --no-deps s3prl==0.4.18  # only for benchmarks/bench_s3prl.py and its test
	touch $@

setup: system $(BIN)/.installed

$(DATA)/manifest.json: | setup
	$(BIN)/python -m hf_corrdistill.tools.superb_mini --output $(DATA) --scale 10

$(STUDENT)/distillation_results.json: configs/demo.yaml | setup $(DATA)/manifest.json
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
	    --num_cpu_threads_per_process $(THREADS) train.py configs/demo.yaml --output_dir $(STUDENT)

demo: setup $(DATA)/manifest.json $(STUDENT)/distillation_results.json
	$(BIN)/python eval_superb.py --upstream student=$(STUDENT) --upstream teacher=demo_data/teacher --tasks ks \
	    --data $(DATA) --noise $(DATA)/noise/test --unseen_noise $(DATA)/noise/unseen \
	    --snrs clean 10 0 --quick --learning_rate 1e-3 --output_dir $(SCORES)
	@cat $(SCORES)/results.md
	@echo "plot: $(SCORES)/ks.png"

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q
