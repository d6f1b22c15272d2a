"""The live page in a real headless browser (Debian's chromium driven by Playwright): a drifting stream
through the real broker and monitor shows up on an already open page, drifted features firing, the
others stable."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from helpers_integration import produce, unique_model
from oncall_stack import answers, poll
from playwright.sync_api import Page, expect

from driftwarden.core.events import Alert
from driftwarden.kafka.broker import free_port
from driftwarden.monitor.status import records_for
from driftwarden.processes import spawn, terminate
from driftwarden.settings import Settings
from driftwarden_load.scenarios import FEATURES, Scenario

# run last: see conftest.pytest_collection_modifyitems; serial: a pytest worker runs other modules after it
pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.serial]

CHROMIUM = Path("/usr/lib/chromium/chromium")
T = TypeVar("T")


def off_the_page_loop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``function`` in another thread: Playwright's sync API keeps an event loop running in this one
    (for the rest of the session: conftest.py runs the browser tests last)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args, **kwargs).result()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's chromium instead of a browser downloaded by ``playwright install``."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does it as root)")
    args = ["--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-gpu"]
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": args}


@pytest.fixture(scope="module")
def ui(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``driftwarden ui`` process on a free port."""
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    process: subprocess.Popen[bytes] = spawn(["ui", "--port", str(port)], kafka, log)
    url = f"http://127.0.0.1:{port}/"
    try:
        poll(lambda: (process.poll() is None and answers(url)) or process.poll() is not None, 30, "the ui answering")
        assert process.poll() is None, log.read_text()
        yield url
    finally:
        code = terminate(process)
    assert code == 0, f"the ui did not stop on SIGTERM (exit {code}): it must end its event streams"


def test_a_drifting_stream_shows_live_with_drifted_features_firing_and_the_others_stable(
    kafka: Settings, monitor_worker, ui: str, page: Page, output_path: str
):
    page.goto(ui)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    model_id = unique_model("ui-drift")
    # num_00 and num_01 shift by 1σ from event 7,000 and stay shifted: 9,000 events, then 3,000 more (a
    # second stream of the same world, shifted throughout), so the page gets at least two windows apart.
    scenario = Scenario(name="abrupt-shift", n_events=9_000, onset=7_000, model_id=model_id)
    more = Scenario(name="abrupt-shift", n_events=3_000, onset=0, seed=1, model_id=model_id,
                    start_ts=scenario.start_ts + scenario.n_events / scenario.events_per_second)  # fmt: skip
    card = page.locator(f'section.model[data-model="{model_id}"]')  # arrives over SSE: the page was open before
    features = card.locator("table.features tr[data-feature]")
    off_the_page_loop(produce, kafka, scenario, batch_size=200)
    expect(card.locator('[data-kpi="events"]')).to_contain_text("9,000", timeout=120_000)
    off_the_page_loop(produce, kafka, more, batch_size=200)
    expect(card.locator('[data-kpi="events"]')).to_contain_text("12,000", timeout=120_000)
    for drifted in scenario.drift_features:
        expect(card.locator(f'tr[data-feature="{drifted}"]')).to_have_attribute("data-state", "firing", timeout=30_000)
    expect(features).to_have_count(len(FEATURES) + 1)  # the inputs and the score
    states = {row.get_attribute("data-feature"): row.get_attribute("data-state") for row in features.all()}
    inputs = {name: state for name, state in states.items() if name != "score"}
    assert {name for name, state in inputs.items() if state == "firing"} == set(scenario.drift_features)
    assert all(state == "stable" for name, state in inputs.items() if name not in scenario.drift_features)

    # The open alerts list each drifted feature with its evidence; the chart has one series per feature.
    open_alerts = card.locator("table.open-alerts tbody tr")
    records = off_the_page_loop(asyncio.run, records_for(kafka, kafka.topics.alerts, model_id))
    fired = {a.subject: a for a in map(Alert.model_validate_json, records)}
    for drifted in scenario.drift_features:
        row = open_alerts.filter(has_text="data_drift").filter(has=page.locator(f'td:text-is("{drifted}")'))
        expect(row).to_have_count(1)
        row.locator("summary").click()
        key, value = next(iter(fired[drifted].evidence.items()))
        expect(row.locator("pre")).to_contain_text(f'"{key}": {json.dumps(value)}')
    with urllib.request.urlopen(f"{ui}api/models", timeout=5) as response:
        (view,) = [m for m in json.load(response)["models"] if m["model_id"] == model_id]
    assert len(view["ts"]) >= 2 and len(view["drift"]["num_00"]) == len(view["ts"])
    assert view["drift"]["num_00"][-1] > 0.5 > view["drift"]["num_02"][-1]
    legend = card.locator(".drift-chart .u-legend .u-series")
    expect(legend.filter(has_text="num_00")).to_have_count(1)
    assert card.locator(".drift-chart canvas").count() == 1
    expect(card.locator('[data-kpi="version"]')).to_contain_text("v1")
    expect(card.locator("h2 [data-group]")).to_have_attribute("data-group", kafka.monitor_group)

    shot = Path(output_path) / "ui-drift.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    card.scroll_into_view_if_needed()
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_the_page_and_its_chart_library_are_served_locally(ui: str):
    with urllib.request.urlopen(ui, timeout=5) as response:
        html = response.read().decode()
    assert '<script src="/static/uPlot.iife.min.js">' in html and "http" not in html.split("<body>")[1]
    with urllib.request.urlopen(f"{ui}static/uPlot.iife.min.js", timeout=5) as response:
        assert response.read(60).startswith(b"/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
