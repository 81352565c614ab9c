# The moderation portal. `make demo` and `make test` do every step on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# torch and torchvision are pinned everywhere: an unpinned resolve pulls GBs of CUDA wheels.
PINS := torch==2.13.0 torchvision==0.28.0
# llama-cpp-python builds portable x86-64 (AVX2) code: a native build picks up AMX on CPUs that
# advertise it, and its AMX kernels crash (SIGSEGV) on prompt batches where the kernel does not
# grant the tile state, as in some VMs. Portable code also keeps pip's cached wheel valid on
# another machine.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

TEST_ENV := DATABASE_URL=postgres://postgres@127.0.0.1:5432/moderation_portal \
	REDIS_URL=redis://127.0.0.1:6379/15 SECRET_KEY=test-only-not-secret SECURE_COOKIES=false \
	OMP_WAIT_POLICY=PASSIVE

# The demo's LLM: SmolLM2-135M-Instruct served by llama-cpp-python on loopback (scripts/llm/).
LLM_PORT ?= 8081
DEMO_LLM_ENV := LLM_BASE_URL=http://127.0.0.1:$(LLM_PORT)/v1 LLM_MODEL=smollm2-135m-instruct \
	LLM_MAX_CONCURRENCY=1 LLM_READ_TIMEOUT_SECONDS=120 LLM_DEADLINE_SECONDS=240

# Prometheus multiprocess files of processes that are gone (a new start begins from zero).
WIPE_METRICS = rm -f "$${PROMETHEUS_MULTIPROC_DIR:-var/metrics}"/*.db

.PHONY: demo test bench soak lint check venv services chromium prometheus triton schema clean

venv: $(STAMP)

# First run: about 3 minutes for the portal's packages and about 12 for llama-cpp-python's
# source build (pip caches the built wheel, so later environments take seconds).
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip<25" wheel
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q -c requirements.lock $(PINS) -e '.[dev,llm]'
	touch $(STAMP)

# PostgreSQL and Redis run on this kind of machine; start whichever has stopped.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || { \
	  echo "starting PostgreSQL"; pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	  for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; }
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { \
	  echo "starting Redis"; redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
	    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log; \
	  for i in $$(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done; }

# Browser tests drive Debian's Chromium through Playwright; no browser is ever downloaded.
chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's Prometheus (server and promtool): tests/test_ops_files.py checks ops/prometheus/ with
# promtool, tests/test_prometheus_scrape.py starts its own server to scrape the portal. Only the
# binaries are used: the package's service is never started or needed (in containers
# policy-rc.d refuses to start it; on a host with systemd it may start on :9090, unused).
prometheus:
	@{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# A real Triton Inference Server (nvidia-pytriton) in its own venv: it pins numpy<2.
triton:
	scripts/triton/setup.sh

demo: venv
	mkdir -p var
	$(WIPE_METRICS)
	$(PY) manage.py migrate --no-input
	@scripts/llm/serve_local.sh --port $(LLM_PORT) > var/llm-server.log 2>&1 & llm=$$!; \
	  trap 'kill $$llm 2>/dev/null' EXIT INT TERM; \
	  for i in $$(seq 60); do curl -sf http://127.0.0.1:$(LLM_PORT)/v1/models >/dev/null && break; sleep 1; done; \
	  $(DEMO_LLM_ENV) $(PY) manage.py demo_setup && \
	  $(DEMO_LLM_ENV) $(PY) manage.py runserver --noreload 127.0.0.1:8000

test: venv services chromium prometheus triton
	$(WIPE_METRICS)
	$(TEST_ENV) $(VENV)/bin/pytest -p no:cacheprovider

bench: venv services
	$(TEST_ENV) $(PY) -m bench.run

# A few minutes of sustained mixed load on loopback (bench/soak.py): SOAK_SECONDS (180) of the
# detection tier publishing, 20 moderators over the API, appeals and webhook deliveries; exits
# non-zero when a count does not reconcile. Not part of `make bench`.
soak: venv services
	$(WIPE_METRICS)
	$(TEST_ENV) $(PY) -m bench.soak

lint: venv
	$(VENV)/bin/ruff check .

# The static checks, no services needed: lint, formatting, types (the files listed under
# [tool.mypy] in pyproject.toml) and the layering test. .pre-commit-config.yaml runs the same.
check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -p no:cacheprovider -q tests/test_architecture.py

schema: venv
	$(PY) -c "import json, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'moderation_portal.settings'); \
	import django; django.setup(); from detection.intake.schema import event_schema; \
	open('docs/detection-event.v1.schema.json', 'w').write(json.dumps(event_schema(), indent=2) + '\n')"

clean:
	rm -rf var .pytest_cache .mypy_cache
