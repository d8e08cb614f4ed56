# Benchmark targets of GoCommerce (see bench/README.md). Included from the
# top-level Makefile. Benchmarks report figures as ratios to baselines
# measured in the same run; they never fail on a number.

CARGO_TARGET_DIR ?= $(HOME)/.cache/gocommerce/target
export CARGO_TARGET_DIR
BENCH_RESULTS ?= bench/results
BENCH_QUICK_RESULTS ?= $(CARGO_TARGET_DIR)/bench-quick

.PHONY: bench bench-quick bench-instructions bench-runs

bench: ## Release build, full benchmark run; writes bench/results/<date>.{json,md}, then bench/RUNS.md
	cargo build --release -p gocommerce -p gocommerce-bench
	$(CARGO_TARGET_DIR)/release/gocommerce-bench --gocommerce $(CARGO_TARGET_DIR)/release/gocommerce \
	  --build release --out-dir $(BENCH_RESULTS)
	$(MAKE) --no-print-directory bench-runs

# Always from bench/results, whose reports RUNS.md links to beside it.
bench-runs: ## The table of every full run in bench/results, written to bench/RUNS.md
	cargo build --release -p gocommerce-bench
	$(CARGO_TARGET_DIR)/release/gocommerce-bench --runs bench/results > bench/RUNS.md.tmp
	mv bench/RUNS.md.tmp bench/RUNS.md

bench-quick: ## Smoke run of every scenario on the debug build (tests the harness, judges no number)
	cargo build -p gocommerce -p gocommerce-bench
	$(CARGO_TARGET_DIR)/debug/gocommerce-bench --quick --gocommerce $(CARGO_TARGET_DIR)/debug/gocommerce \
	  --build debug --out-dir $(BENCH_QUICK_RESULTS)

bench-instructions: ## Release build; user-space instructions per product view and per order under callgrind (bench/README.md)
	cargo build --release -p gocommerce -p gocommerce-bench
	$(CARGO_TARGET_DIR)/release/gocommerce-bench --instructions \
	  --gocommerce $(CARGO_TARGET_DIR)/release/gocommerce
