# The two commands a newcomer needs: `make up` and `make test`. Everything else is for work on
# the code. Every target installs what it needs first (scripts/bootstrap.sh).
.PHONY: up test test-unit test-integration lint format typecheck check deploy-check bench bench-quick \
	bench-table bootstrap chaos attack

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

chaos: bootstrap ## the chaos suite's long profile: 10,000 conversions under faults (CI: 1,000)
	CHAOS_CONVERSIONS=10000 $(PYTEST) -q -s tests/chaos

attack: bootstrap ## the attack suite, schemathesis widened (every phase, more examples)
	ATTACK_PHASES=examples,coverage,fuzzing ATTACK_MAX_EXAMPLES=50 $(PYTEST) -q tests/attack

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

bench: bootstrap ## every benchmark, figures to bench/results.json (ARGS=--quick: the short profile)
	$(UV) run --frozen python bench/run_all.py $(ARGS)

bench-quick: bootstrap ## the short profile of every benchmark (CI smoke: fails on errors, not figures)
	$(UV) run --frozen python bench/run_all.py --quick $(ARGS)

bench-table: ## docs/performance.md's generated table from bench/results.json
	$(UV) run --frozen python bench/render_table.py
