# Loupe — every target bootstraps .venv itself (python3 -m venv + pip), so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.loupe-installed
DEMO_WS ?= .demo/workspace.sqlite


.PHONY: run test bench clean-demo package soak tour

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

$(VENV)/.loupe-bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	@touch $@

## make run: install, build the demo workspace from resources/demo, and open Loupe on it
run: $(STAMP)
	$(BIN)/loupe --workspace $(DEMO_WS) gui --demo

## make test: install and run the whole suite (core tests without Qt, app tests offscreen)
test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -p no:cacheprovider

## make tour: the acceptance flow in a real X11 window under Xvfb, one screenshot per step in docs/screenshots/tour/
tour: $(STAMP)
	LOUPE_TOUR_DIR=docs/screenshots/tour QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/app/test_acceptance_workstation.py

## make soak: thousands of fuzzed imports and ~8 minutes of random SIGKILLs; writes docs/reliability.md
soak: $(STAMP)
	$(BIN)/python bench/soak.py

## make bench: real-data benchmarks against the reference tools; writes docs/benchmarks.md
bench: $(VENV)/.loupe-bench
	$(BIN)/python bench/import_bench.py
	$(BIN)/python bench/contact_sheet.py
	$(BIN)/python bench/inference_bench.py
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/explain_bench.py
	$(BIN)/python bench/explain_sheet.py
	$(BIN)/python bench/lime_segments.py
	$(BIN)/python bench/al_bench.py
	$(BIN)/python bench/al_real_loop.py
	$(BIN)/python bench/explain_real.py
	$(BIN)/python bench/lime_fair.py
	$(BIN)/python bench/explain_fullres.py
	$(BIN)/python bench/fast_reading_bench.py
	$(BIN)/python bench/team_load_bench.py
	$(BIN)/python bench/startup_bench.py
	$(BIN)/python bench/annotate_bench.py

## make package: freeze Loupe with PyInstaller into /tmp/loupe-build/dist/loupe and smoke-test it (packaging/README.md)
package: $(STAMP)
	bash packaging/build.sh

clean-demo:
	rm -rf .demo
