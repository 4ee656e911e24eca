# Sluice — `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
PKGS := ./...
GOLANGCI_VERSION := v2.15.0

.PHONY: help run test test-race test-short test-cluster test-browser helm-check fuzz vet lint bench bench-scale soak build db-reset up down clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## start the whole stack (Postgres, NATS, migrations, worker, ingress, fake model) in the foreground
	@scripts/dev.sh

test: ## vet, every test with the race detector (real Postgres and NATS, started if needed), then each fuzz target for FUZZTIME (5s)
	@$(GO) vet $(PKGS)
	@TEST_DATABASE_URL="$$(scripts/ensure-postgres.sh sluice_test)" $(GO) test -race -count=1 -timeout 20m $(PKGS)
	@GO="$(GO)" FUZZTIME="$(or $(FUZZTIME),5s)" scripts/fuzz.sh

test-race: test ## the same as test (which always runs with -race)

test-short: ## every test without the race detector (faster)
	@TEST_DATABASE_URL="$$(scripts/ensure-postgres.sh sluice_test)" $(GO) test -count=1 -timeout 20m $(PKGS)

test-cluster: ## the cluster tests alone: a 3-node JetStream cluster, R3 streams, a stream leader and a worker killed under load (~1 min; make test runs them too)
	@TEST_DATABASE_URL="$$(scripts/ensure-postgres.sh sluice_test)" $(GO) test -race -count=1 -run '^TestCluster' -timeout 10m -v ./internal/e2e/

test-browser: ## the web console in headless Chromium (installed if missing) against a real stack; screenshots in .dev/screenshots/ (~1 min)
	@GO="$(GO)" scripts/test-browser.sh

helm-check: ## lint and render deploy/helm/sluice (default and production values) with the Helm Go module; strictly decode every object into k8s.io/api types
	@cd deploy/helm/check && $(GO) vet ./... && $(GO) test -count=1 ./... && $(GO) run . ../sluice

fuzz: ## each fuzz target for FUZZTIME (60s); FUZZ_TARGETS='FuzzAPI|…' picks some (see scripts/fuzz.sh)
	@GO="$(GO)" FUZZTIME="$(or $(FUZZTIME),60s)" scripts/fuzz.sh

vet: ## go vet
	@$(GO) vet $(PKGS)

lint: ## golangci-lint v2 with the import-direction rules of .golangci.yaml (installed on demand into .dev/bin)
	@.dev/bin/golangci-lint version 2>/dev/null | grep -q ' $(GOLANGCI_VERSION:v%=%) ' || \
	  GOBIN=$(CURDIR)/.dev/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	@.dev/bin/golangci-lint run $(PKGS)

bench: ## end-to-end benchmark, direct vs through Sluice (~4 min; BENCH_FLAGS=-h lists options; see BENCHMARKS.md)
	@$(GO) run ./cmd/sluicebench -go "$(GO)" $(BENCH_FLAGS)

bench-scale: ## scaling figures: sync load on 1|2 ingresses × 1|2|4 workers sharing one NATS and one Postgres, CPU per request by process (~2 min; see BENCHMARKS.md)
	@$(GO) run ./cmd/sluicebench -go "$(GO)" -sections scale -duration 5s -warmup 2s $(BENCH_FLAGS)

soak: ## fault storm: 50,000 requests through real ingress, worker and faulty upstream; bounds and exact ledger (~3 min; see BENCHMARKS.md)
	@TEST_DATABASE_URL="$$(scripts/ensure-postgres.sh sluice_test)" SLUICE_SOAK_REQUESTS=50000 \
	  $(GO) test -count=1 -run '^TestSoak$$' -timeout 30m -v ./internal/e2e/

build: ## build every binary into bin/
	@mkdir -p bin && $(GO) build -o bin/ ./cmd/...

db-reset: ## drop and recreate the dev database (sluice) and apply migrations
	@url="$$(scripts/ensure-postgres.sh sluice)"; \
	  psql "$$url" -v ON_ERROR_STOP=1 -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;' >/dev/null && \
	  DATABASE_URL="$$url" $(GO) run ./cmd/worker migrate

up: ## docker compose up (needs SLUICE_ENCRYPTION_KEY, SLUICE_ADMIN_TOKEN and NATS_PASSWORD)
	docker compose up --build

down: ## docker compose down
	docker compose down

clean: ## stop the private Postgres and NATS, remove build output
	@scripts/ensure-postgres.sh --stop || true
	@scripts/ensure-nats.sh --stop || true
	@rm -rf bin
