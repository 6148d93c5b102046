# Contributor shortcuts; the README's two quick-start commands need none of this.
.DEFAULT_GOAL := all
PY ?= python3

.PHONY: help install dev test test-long lint format bench kernels conformance all
help:          ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
install:       ## editable install with test and dev tools
	$(PY) -m pip install -e '.[dev]'
dev:           ## rebuild the Rust extension in place
	rm -f python/cowcore/*.so && $(PY) -m pip install -e . --no-deps
test:          ## Rust unit tests, then the Python suite
	cargo test -p cowcore-core && $(PY) -m pytest
test-long:     ## the long property/differential profile (thousands of examples)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/test_model_properties.py tests/differential
lint:          ## every static check CI runs
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
	ruff check python tests benches fuzz && ruff format --check python tests benches fuzz
	mypy --strict python/cowcore
	mypy --strict tests benches
format:        ## apply formatters
	cargo fmt --all && ruff check --fix python tests benches fuzz && ruff format python tests benches fuzz
bench:         ## benchmarks (see BENCHMARKS.md)
	$(PY) -m pytest benches --benchmark-enable
kernels:       ## fetch the 6.1, 6.12 and 7.x kernels into .kernels/
	$(PY) -m cowcore.kernel fetch .kernels
conformance:   ## run the conformance scenarios on the real kernels
	$(PY) -m pytest tests/kernel
all: format dev lint test
