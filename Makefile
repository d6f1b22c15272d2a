# The two commands a new user needs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck format clean prometheus-tools browser-tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/driftwarden demo

# The unit tests spread over every core. The integration and fault tests run two modules at a time (each
# pytest worker has a broker and a monitor worker of its own; the tests mostly wait on brokers, group joins
# and worker processes); those marked serial (time bounds, the browser) run alone afterwards.
test: $(STAMP) lint typecheck prometheus-tools browser-tools
	$(BIN)/python -m pytest -n auto tests/unit
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not serial" tests/integration tests/faults
	$(BIN)/python -m pytest -m serial tests/integration tests/faults

# The on-call tests run Debian's Prometheus 2.42 and Alertmanager 0.25 on free loopback ports. Install
# them when missing and we are root on Debian; the packages' own services are stopped and disabled so
# nothing listens on the default ports.
PROMETHEUS_TOOLS := prometheus promtool prometheus-alertmanager amtool
prometheus-tools:
	@missing=""; for tool in $(PROMETHEUS_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "make test needs$$missing: run it as root on Debian, or install the Debian packages" \
	    "prometheus and prometheus-alertmanager yourself" >&2; exit 1; fi; \
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	  prometheus prometheus-alertmanager; \
	if [ -d /run/systemd/system ]; then systemctl disable --now prometheus prometheus-alertmanager || true; fi

# The live page's browser test (tests/integration/test_ui.py) drives Debian's chromium through Playwright,
# without `playwright install`. Install it when missing and we are root on Debian.
CHROMIUM := /usr/lib/chromium/chromium
browser-tools:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "make test needs $(CHROMIUM): run it as root on Debian, or install the Debian package chromium" \
	    "yourself" >&2; exit 1; fi; \
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy on the package and the load generator (settings in pyproject.toml; driftwarden.core strictly).
typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .driftwarden .pytest_cache .ruff_cache .mypy_cache
