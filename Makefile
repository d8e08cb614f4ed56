# GoCommerce developer commands. `make run` and `make test` are the two that matter.

SHELL := /bin/bash
.DEFAULT_GOAL := help

export CARGO_TARGET_DIR ?= $(HOME)/.cache/gocommerce/target
TOOLS ?= $(HOME)/.cache/gocommerce/tools
BUF := $(TOOLS)/node_modules/.bin/buf
SCHEMATHESIS := $(TOOLS)/venv/bin/schemathesis
AIOSMTPD := $(TOOLS)/venv/bin/aiosmtpd
BIN := $(CARGO_TARGET_DIR)/debug/gocommerce

# The bootstrap admin of a local run (see README).
export GOCOMMERCE_ADMIN_EMAIL ?= admin@gocommerce.local
export GOCOMMERCE_ADMIN_PASSWORD ?= change-me-admin

.PHONY: help run build test fmt fmt-check clippy cargo-test buf-lint schemathesis walkthrough tools clean-test-databases

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-22s %s\n", $$1, $$2}'

run: ## Build and start every service and the gateway (http://localhost:8080)
	cargo run --bin gocommerce -- all

build: ## Build everything
	cargo build --workspace --all-targets

test: fmt-check clippy clean-test-databases cargo-test buf-lint schemathesis walkthrough k8s-test bench-quick ## Everything CI checks
	@echo "make test: all checks passed"

fmt: ## Format the code
	cargo fmt --all

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

cargo-test: tools ## Unit and integration tests against the local PostgreSQL and RabbitMQ
	GOCOMMERCE_PYTHON=$(TOOLS)/venv/bin/python cargo test --workspace

buf-lint: tools ## Lint the protobuf contracts
	cd proto && $(BUF) lint

schemathesis: tools ## Fuzz the live gateway against its own OpenAPI document
	cargo build --bin gocommerce
	scripts/schemathesis.sh $(BIN) $(SCHEMATHESIS)

walkthrough: tools ## Run the README's walk-throughs as written and check what they did
	cargo build --bin gocommerce
	scripts/readme-walkthrough.sh $(BIN) $(AIOSMTPD)

clean-test-databases: ## Drop databases left by earlier test runs
	scripts/drop-test-databases.sh 'gct\_%'

tools: $(BUF) $(SCHEMATHESIS) $(AIOSMTPD) ## Install buf and schemathesis under ~/.cache/gocommerce/tools

$(BUF):
	mkdir -p $(TOOLS)
	npm install --no-audit --no-fund --silent --prefix $(TOOLS) @bufbuild/buf@1
	test -x $(BUF)

# aiosmtpd is the real SMTP server the notification tests start. The venv is
# brought in line with scripts/python-tools.txt whenever that file changes.
$(SCHEMATHESIS) $(AIOSMTPD): $(TOOLS)/venv/installed.txt

$(TOOLS)/venv/installed.txt: scripts/python-tools.txt
	test -x $(TOOLS)/venv/bin/python || python3 -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install --quiet --disable-pip-version-check -r scripts/python-tools.txt
	test -x $(SCHEMATHESIS) && test -x $(AIOSMTPD)
	cp scripts/python-tools.txt $@

-include mk/*.mk
