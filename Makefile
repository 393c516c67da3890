# The two commands a newcomer needs: `make up` and `make test`. Everything else is for work on
# the code. Every target installs what it needs first (scripts/bootstrap.sh).
.PHONY: up test test-unit test-integration lint format typecheck check deploy-check bench bootstrap

UV ?= uv
PYTEST ?= $(UV) run --frozen pytest

bootstrap:
	@scripts/bootstrap.sh

up: bootstrap ## start Kafka, Postgres, migrations and the four services (Ctrl-C stops)
	$(UV) run --frozen devstack up

test: bootstrap ## unit, integration and e2e tests on real Kafka + Postgres
	$(PYTEST) -q

test-unit: bootstrap ## pure domain tests only, no infrastructure
	$(PYTEST) -q -m "not integration"

test-integration: bootstrap
	$(PYTEST) -q -m integration

lint: bootstrap
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: bootstrap
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

typecheck: bootstrap
	$(UV) run --frozen mypy -p referral_events -p servicekit -p devstack -p link_service \
		-p attribution_service -p reward_service -p notification_service

check: lint typecheck

deploy-check: ## validate compose, kustomize overlays and Dockerfiles offline
	deploy/check.sh

bench: bootstrap ## benchmarks; each prints one JSON line of figures
	@for b in bench/*.py; do [ -e "$$b" ] && $(UV) run --frozen python "$$b"; done; true
