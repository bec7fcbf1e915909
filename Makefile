# Handrail - `make help` lists the targets. CI runs `make test`, the same as you.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HANDRAIL := $(BIN)/handrail
# promtool checks and unit-tests deploy/prometheus/rules. Prometheus v3.16's Go module is tagged
# v0.316.0; it is built from the Go module proxy into the venv, once. remove_all_sd leaves out the
# cloud service discoveries (AWS, Azure, GCE, ...): the build takes a few minutes instead of twenty,
# and nothing here discovers targets (deploy/prometheus/prometheus.yml lists them).
PROMTOOL_VERSION ?= v0.316.0
PROMTOOL := $(BIN)/promtool
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
RULES := deploy/prometheus/rules

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z][a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(BIN)/activate

.PHONY: install
install: $(BIN)/activate ## create .venv with Handrail and its dev tools (editable)

# apt's and dpkg's output (hundreds of lines for a browser) goes here; the terminal gets one line.
APT_LOG ?= .run/apt.log

.PHONY: system-deps
system-deps: ## what the stack and the demo need: a JDK and Maven (checked), redis-server (installed if missing)
	@command -v java >/dev/null || { echo "java not found: install a JDK 17+ (e.g. apt-get install -y openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "mvn not found: install Maven (e.g. apt-get install -y maven)"; exit 1; }
	@tools/apt-install.sh $(APT_LOG) redis-server:redis-server

.PHONY: test-deps
test-deps: system-deps ## and what only the tests need: chromium, for the review page's browser test
	@tools/apt-install.sh $(APT_LOG) chromium:chromium || echo "without chromium the review page's browser test is skipped"

.PHONY: infra
infra: install system-deps ## start Kafka (KRaft, from Maven Central jars) and Redis, and wait until ready
	$(HANDRAIL) dev up

.PHONY: topics
topics: install ## create Handrail's topics
	$(HANDRAIL) topics ensure

.PHONY: up
up: infra ## start infra, the topics and every service (one worker per agent) in the background
	$(HANDRAIL) dev services up

.PHONY: down
down: install ## stop the services and the infra that `make up` / `make infra` started, and any a test run left
	$(HANDRAIL) dev services down
	$(HANDRAIL) dev down
	@# A test session stops the servers it started; one that was killed leaves them in .run/test.
	@if [ -d .run/test ]; then HANDRAIL_RUN_DIR=.run/test $(HANDRAIL) dev down; fi

.PHONY: demo
demo: install system-deps ## run the expense-approval and vendor-due-diligence demos end to end, then stop what it started
	$(HANDRAIL) demo

.PHONY: test
test: install test-deps ## run every test (starts Kafka and Redis when they are not running, and stops them after)
	$(BIN)/pytest

.PHONY: chaos
chaos: install system-deps ## the chaos soak: 2000 tasks under 30 faults on a stack of its own; fails on any broken promise
	$(BIN)/python -m tools.chaos $(CHAOS_ARGS)

$(PROMTOOL): | $(BIN)/activate
	@command -v $(GO) >/dev/null || { echo "go not found: install Go 1.26.7+ (promtool is built from the Go module proxy)"; exit 1; }
	GOBIN="$(abspath $(BIN))" $(GO) install -tags remove_all_sd github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

.PHONY: promtool
promtool: $(PROMTOOL) ## build promtool into .venv/bin if it is missing (a few minutes, once)

.PHONY: rules
rules: $(PROMTOOL) ## check the Prometheus config and rules, and run the rules' unit tests
	$(PROMTOOL) check config deploy/prometheus/prometheus.yml
	$(PROMTOOL) check rules $(RULES)/handrail.rules.yml
	$(PROMTOOL) test rules $(RULES)/handrail.rules.test.yml

.PHONY: lint
lint: install rules ## ruff, mypy (strict), the schema and AsyncAPI checks, promtool on the alert rules
	$(BIN)/ruff check libs services tests bench deploy tools
	$(BIN)/mypy
	$(BIN)/python -m handrail.schemas --check
	$(BIN)/python -m handrail.asyncapi --check
	$(HANDRAIL) k8s render --out k8s/base/generated --check
	$(BIN)/hadolint Dockerfile tools/container/kafka/Containerfile tools/container/redis/Containerfile

.PHONY: image
image: ## build the Handrail image handrail:local (podman or docker; BASE_IMAGE=... its base, else built from Debian packages when python:slim cannot be pulled)
	tools/container/build-image.sh

# podman-compose drives podman (docker has `docker compose`); pinned, like the other tools.
PODMAN_COMPOSE_VERSION ?= 1.6.0

.PHONY: compose-test
compose-test: install ## docker-compose.yml's core in containers (local stand-ins for Kafka and Redis if need be): tasks and a review checked from the host, then torn down
	@$(BIN)/python -c "import podman_compose" 2>/dev/null || $(BIN)/pip install --quiet podman-compose==$(PODMAN_COMPOSE_VERSION)
	$(BIN)/python -m tools.compose_test $(COMPOSE_TEST_ARGS)

.PHONY: k8s
k8s: install ## re-render k8s/base/generated from config/ (run after changing the contracts)
	$(HANDRAIL) k8s render --out k8s/base/generated

.PHONY: sasl
sasl: install system-deps ## a local Kafka with SASL/SCRAM and the ACLs enforced, on 127.0.0.1:19092
	$(HANDRAIL) dev sasl up

.PHONY: schemas
schemas: install ## regenerate schemas/ (the payloads' JSON Schemas, the AsyncAPI document) from the models and config/
	$(BIN)/python -m handrail.schemas
	$(BIN)/python -m handrail.asyncapi

.PHONY: bench
bench: install ## run the benchmarks (needs `make infra`; not part of CI)
	$(BIN)/python bench/budgets.py
	$(BIN)/python bench/pipeline.py
