# The commands the README shows. Each target runs the idempotent set-up first
# (seconds when the machine is warm), so a fresh clone needs nothing else.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv/bin
TOOLS_BIN = $(shell hack/tools.sh --print)
export PATH := $(TOOLS_BIN):$(PATH)

.PHONY: help setup demo images cluster cluster-down test test-unit test-integration test-e2e lint format typecheck bench sync-crds clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: ## install everything (Debian packages, .venv, Go-built etcd/kube-apiserver/kubectl/helm)
	@hack/setup.sh

demo: setup ## run a full rollout locally: control plane, Prometheus, suggestion processes, controller
	$(VENV)/python -m testbed.demo $(ARGS)

images: ## build the three images here (Docker engine, base image, docker build; hack/images.sh)
	@hack/images.sh $(if $(TAG),--tag $(TAG))

cluster: ## a two-node kind cluster built here (hack/cluster.sh up; NAME=modelrollout-e2e)
	@hack/cluster.sh up $(NAME)

cluster-down: ## delete that cluster
	@hack/cluster.sh down $(NAME)

test: setup lint typecheck ## lint, types, unit and integration tests (e2e skips without Docker)
	$(VENV)/pytest

test-unit: setup ## unit tests only (seconds)
	$(VENV)/pytest -m unit

test-integration: setup ## integration tests on the local test bed (minutes)
	$(VENV)/pytest -m integration

test-e2e: setup ## the e2e tier: images, a kind cluster, helm install, rollouts (tests/e2e)
	MODELROLLOUT_E2E=1 $(VENV)/pytest -m e2e -s

lint: setup ## ruff lint and format check
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

format: setup ## apply ruff's formatting and fixes
	$(VENV)/ruff format .
	$(VENV)/ruff check --fix .

typecheck: setup ## mypy --strict
	$(VENV)/mypy

bench: setup ## the benchmarks (print figures; not tests)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(VENV)/python $$b || exit 1; done

sync-crds: ## copy crds/ into the chart (Helm reads CRDs only from inside the chart)
	cp crds/*.yaml charts/modelrollout/crds/

clean: ## remove the virtual environment and caches in the repository
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis
