"""Monitor kill trials: ``kill -9`` of real monitor workers at random moments under live load.

One run = a fresh set of topics and consumer group on a real broker, a few models produced at a steady
rate (with late labels and malformed messages), one or two monitor workers, and ``kills`` trials: a
worker is killed with SIGKILL at a random moment (seeded) while events keep arriving, and restarted after
a random pause, so it comes back to a backlog; with two workers the survivor takes over meanwhile. A
dashboard scrapes every live worker's ``/metrics`` every 0.25 s throughout.

After the run, from the topics alone: every produced event was processed or dead-lettered exactly once
(status counters, and distinct dead letters on the dead-letter topic), every label counted once, every
expected alert fired with one id (a replay re-raises the same alert, never a new one), and every worker
is alive. Used by ``tests/faults/test_monitor_kills.py`` and by ``driftwarden faults``.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.partitioner import murmur2

from driftwarden.bench.invariants import alert_id_problems, dead_letter_coordinates, wait_counts
from driftwarden.core.events import Alert, DeadLetter, MonitorStatus
from driftwarden.kafka.broker import EmbeddedBroker, free_port
from driftwarden.monitor.exit_codes import RESTART_EXITS
from driftwarden.monitor.status import latest_status, records_for
from driftwarden.processes import spawn, terminate
from driftwarden.settings import Settings
from driftwarden_load.producer import ProduceReport, ScenarioProducer
from driftwarden_load.scenarios import Scenario

#: Longest wait for a (re)started worker to get to work, and for the final count to settle.
PROGRESS_TIMEOUT_S = 90.0
#: What a monitor worker logs when it got its partitions (driftwarden.monitor.service).
JOINED = b"partitions assigned:"


@dataclass(frozen=True)
class KillRun:
    """What one run does. A kill comes ``kill_after_s`` after the killed worker joined the group (with
    two workers: the slot killed is drawn at random), the restart ``restart_after_s`` after the kill
    (uniform). Two models, on the first and the last partition (with two workers, each worker holds
    one under range and round-robin assignment), get ``rate`` events/s each, for about
    ``seconds_per_kill`` per kill; the drift starts after 6,000 events (past the 5,000-event reference)."""

    seed: int
    kills: int
    workers: int = 1
    rate: float = 300.0
    seconds_per_kill: float = 12.0
    kill_after_s: tuple[float, float] = (0.3, 2.5)
    restart_after_s: tuple[float, float] = (0.0, 1.0)
    models: int = 2

    @property
    def events_per_model(self) -> int:
        """Paced load for the kills; what is left when they are over is sent at full speed."""
        return max(9_000, int(self.rate * self.seconds_per_kill * self.kills))


@dataclass
class RunResult:
    """The invariants checked after one run; ``problems`` is empty when all of them hold."""

    run: KillRun
    kills: int = 0
    produced: int = 0
    processed: int = 0
    dead_lettered: int = 0
    dead_letters_on_topic: int = 0
    alerts: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    HEADER = (
        "| seed | workers | kills | produced | processed | dead-lettered (status / topic) | alerts | seconds "
        "| result |\n|---|---|---|---|---|---|---|---|---|"
    )

    def as_row(self) -> str:
        verdict = "ok" if self.ok else "FAILED: " + "; ".join(self.problems)
        return (
            f"| {self.run.seed} | {self.run.workers} | {self.kills} | {self.produced:,} | {self.processed:,} "
            f"| {self.dead_lettered:,} / {self.dead_letters_on_topic:,} | {self.alerts} | {self.seconds:.0f} "
            f"| {verdict} |"
        )


@contextmanager
def trial_broker(work: Path) -> Iterator[Settings]:
    """The cluster of ``DRIFTWARDEN_KAFKA_BOOTSTRAP`` if set, else an embedded broker logging to ``work``."""
    base = Settings()
    if base.kafka_bootstrap:
        yield base
        return
    with EmbeddedBroker(work / "broker.log", settings=base) as broker:
        yield broker.settings


def run_settings(base: Settings, work: Path, name: str) -> Settings:
    """Topics and consumer group of this run only; a short session so a killed member leaves quickly."""
    return base.model_copy(update={
        "topic_prefix": f"{name}.", "monitor_group": f"{name}-monitor", "state_dir": work / name,
        "session_timeout_s": 3.0, "heartbeat_interval_s": 0.5, "checkpoint_interval_s": 2.0,
    })  # fmt: skip


def model_ids(name: str, partitions: int) -> list[str]:
    """Two model ids, on the first and the last partition as the producer's partitioner places them."""
    chosen: dict[int, str] = {}
    candidate = 0
    while len(chosen) < 2:
        model_id = f"{name}-m{candidate}"
        partition = (murmur2(model_id.encode()) & 0x7FFFFFFF) % partitions
        if partition in (0, partitions - 1):
            chosen.setdefault(partition, model_id)
        candidate += 1
    return [chosen[p] for p in sorted(chosen)]


class Workers:
    """The run's monitor processes, restartable by slot, scraped like a dashboard would."""

    def __init__(self, settings: Settings, work: Path, count: int) -> None:
        self.settings = settings
        self.work = work
        self.started = 0
        self.supervised: list[tuple[int, int, Path]] = []  # (pid, exit code, log) of each supervised restart
        self.slots: list[tuple[subprocess.Popen[bytes], int, Path]] = [self._spawn() for _ in range(count)]
        self._stop = threading.Event()
        self._scraper = threading.Thread(target=self._scrape, daemon=True)
        self._scraper.start()

    def _spawn(self) -> tuple[subprocess.Popen[bytes], int, Path]:
        port = free_port()
        self.started += 1
        log = self.work / f"worker-{self.started}.log"
        return spawn(["monitor", "--metrics-port", str(port)], self.settings, log), port, log

    def kill(self, slot: int) -> None:
        process = self.slots[slot][0]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def restart(self, slot: int) -> None:
        self.slots[slot] = self._spawn()

    def supervise(self) -> None:
        """Restart each worker that exited asking for it (an exit code of :data:`RESTART_EXITS`), as the
        supervisor of docker-compose.yml (``restart: unless-stopped``) does; note it in ``supervised``.
        Any other exit is a crash, left for :meth:`dead` to report."""
        for slot, (process, _, log) in enumerate(self.slots):
            if (code := process.poll()) in RESTART_EXITS:
                self.supervised.append((process.pid, code, log))
                self.restart(slot)

    def dead(self) -> list[int]:
        return [process.pid for process, _, _ in self.slots if process.poll() is not None]

    def wait_back(self, slot: int) -> None:
        """Until the worker in ``slot`` has joined the group and got its partitions (its own log says so)."""
        process, _, log = self.slots[slot]
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        while JOINED not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"worker {process.pid} did not join its group; see {log}")
            time.sleep(0.2)

    @staticmethod
    def metrics(port: int) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
                return str(response.read().decode())
        except OSError:
            return ""  # not up yet, or just killed

    def _scrape(self) -> None:
        while not self._stop.wait(0.25):
            for _, port, _ in list(self.slots):
                self.metrics(port)

    def settle(self) -> float:
        """Stop every worker gracefully and start one fresh worker; return its start (wall clock)."""
        for process, _, _ in self.slots:
            terminate(process)
        started = time.time()
        self.slots = [self._spawn()]
        return started

    def stop(self) -> None:
        self._stop.set()
        self._scraper.join(5)
        for process, _, _ in self.slots:
            terminate(process)


def run_kills(base: Settings, work: Path, run: KillRun, name: str) -> RunResult:
    """One run on the broker of ``base`` (its topics must be creatable); see the module docstring."""
    from driftwarden.bench.throughput import bench_settings

    started = time.monotonic()
    rng = random.Random(run.seed)
    settings = run_settings(bench_settings(base, work, name, partitions=base.partitions), work, name)
    n = run.events_per_model
    scenarios = [
        Scenario(name="abrupt-shift", n_events=n, onset=6_000, seed=run.seed, model_id=model_id)
        for model_id in model_ids(name, settings.partitions)
    ]
    producers = [
        ScenarioProducer(settings, s, batch_size=100, rate=run.rate, label_delay=1_000, malformed_every=1_000)
        for s in scenarios
    ]  # fmt: skip
    reports: list[ProduceReport] = []
    producing = threading.Thread(target=lambda: reports.extend(asyncio.run(produce_all(producers))))
    result = RunResult(run)
    workers = Workers(settings, work / name, run.workers)
    try:
        producing.start()
        for slot in range(run.workers):
            workers.wait_back(slot)
        for _ in range(run.kills):
            result.kills += _one_kill(workers, rng, run)
        for producer in producers:
            producer.rate = 0.0  # the rest of the stream at full speed: the kills are over
        producing.join(PROGRESS_TIMEOUT_S * 2)
        _check(settings, scenarios, reports, workers, result)
    finally:
        producing.join(PROGRESS_TIMEOUT_S * 2)
        workers.stop()
    result.seconds = time.monotonic() - started
    return result


def run_all(base: Settings, work: Path, runs: list[KillRun]) -> list[RunResult]:
    """The runs side by side (each has its own topics, group and workers); results in run order."""
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        return list(pool.map(lambda run: run_kills(base, work, run, f"kills{run.seed}-{uuid.uuid4().hex[:6]}"), runs))


async def produce_all(producers: list[ScenarioProducer]) -> list[ProduceReport]:
    return list(await asyncio.gather(*(p.run() for p in producers)))


def _one_kill(workers: Workers, rng: random.Random, run: KillRun) -> int:
    """Kill a worker at a random moment, restart it after a pause; 1 once it is back in its group."""
    slot = rng.randrange(len(workers.slots))
    time.sleep(rng.uniform(*run.kill_after_s))
    workers.kill(slot)
    time.sleep(rng.uniform(*run.restart_after_s))
    workers.restart(slot)
    workers.wait_back(slot)
    return 1


def progress(settings: Settings, scenarios: list[Scenario], since: float) -> dict[str, int]:
    """Per model: predictions processed + dead-lettered, and (as ``"<model> labels"``) labels counted.
    Both: the labels topic is read beside the predictions topic and may still be behind when the
    predictions are all in."""
    statuses = asyncio.run(_statuses(settings, scenarios, since))
    counts = {m: s.events_processed + s.events_dead_lettered for m, s in statuses.items() if s is not None}
    return counts | {f"{m} labels": s.labels_received or 0 for m, s in statuses.items() if s is not None}


async def _statuses(settings: Settings, scenarios: list[Scenario], since: float) -> dict[str, MonitorStatus | None]:
    """The latest status of each model, if published at or after ``since`` (wall clock)."""
    latest = {s.model_id: await latest_status(settings, s.model_id) for s in scenarios}
    return {m: s if s is not None and s.ts >= since else None for m, s in latest.items()}


async def _last_events(settings: Settings, scenarios: list[Scenario]) -> list[ProduceReport]:
    """One more prediction per model (fresh event ids), so that a fresh worker reads every model's
    partition, restores it and publishes its status."""
    return [
        await ScenarioProducer(settings, Scenario(n_events=1, seed=s.seed + 1_000_003, model_id=s.model_id),
                               label_fraction=0.0).run()
        for s in scenarios
    ]  # fmt: skip


def _check(
    settings: Settings, scenarios: list[Scenario], reports: list[ProduceReport], workers: Workers, result: RunResult
) -> None:
    """Check the invariants of the run on the state that outlives its workers: once every worker is
    checked alive, all are stopped and one fresh worker restores every partition from its checkpoint
    and the committed offsets (no rebalance can move a partition to an older checkpoint meanwhile);
    its counts must come to exactly what was produced."""
    if len(reports) != len(scenarios):
        result.problems.append("the producer failed")
        return
    if dead := workers.dead():
        result.problems.append(f"workers {dead} died")
    since = workers.settle()
    for report, last in zip(reports, asyncio.run(_last_events(settings, scenarios)), strict=True):
        report.predictions += last.predictions
    expected = {s.model_id: r.predictions + r.malformed for s, r in zip(scenarios, reports, strict=True)}
    expected |= {f"{s.model_id} labels": r.labels for s, r in zip(scenarios, reports, strict=True)}
    try:
        wait_counts(lambda: progress(settings, scenarios, since), expected)
    except TimeoutError as exc:
        result.problems.append(str(exc))
    statuses = asyncio.run(_statuses(settings, scenarios, since))
    for scenario, report in zip(scenarios, reports, strict=True):
        status = statuses[scenario.model_id]
        if status is None:
            result.problems.append(f"{scenario.model_id}: no status")
            continue
        result.produced += report.predictions + report.malformed
        result.processed += status.events_processed
        result.dead_lettered += status.events_dead_lettered
        result.problems += model_problems(settings, scenario, report, status, result)
    if dead := workers.dead():
        result.problems.append(f"the fresh worker {dead} died")


def model_problems(
    settings: Settings, scenario: Scenario, report: ProduceReport, status: MonitorStatus, result: RunResult
) -> list[str]:
    model = scenario.model_id
    problems = []
    if (status.events_processed, status.events_dead_lettered) != (report.predictions, report.malformed):
        problems.append(
            f"{model}: produced {report.predictions:,} + {report.malformed} malformed, status says "
            f"{status.events_processed:,} processed + {status.events_dead_lettered} dead-lettered"
        )
    if status.labels_received != report.labels:
        problems.append(f"{model}: {report.labels:,} labels produced, {status.labels_received:,} counted")
    letters = [DeadLetter.model_validate_json(v) for v in _records(settings, settings.topics.dead_letters, model)]
    distinct = dead_letter_coordinates(letters)
    result.dead_letters_on_topic += len(distinct)
    if len(distinct) != report.malformed:
        problems.append(f"{model}: {report.malformed} malformed produced, {len(distinct)} distinct dead letters")
    alerts = [Alert.model_validate_json(v) for v in _records(settings, settings.topics.alerts, model)]
    distinct_alerts, duplicated = alert_id_problems(model, alerts)
    result.alerts += distinct_alerts
    problems += duplicated
    fired = {(a.kind, a.subject) for a in alerts if a.state == "firing"}
    if fired != scenario.ground_truth().expected_alerts:
        problems.append(f"{model}: alerts {sorted(fired)}, expected {sorted(scenario.ground_truth().expected_alerts)}")
    return problems


def _records(settings: Settings, topic: str, model_id: str) -> list[bytes]:
    return asyncio.run(records_for(settings, topic, model_id))


def default_runs(trials: int, seed: int) -> list[KillRun]:
    """Runs of up to 6 kills adding up to ``trials`` kills, alternating one and two workers.

    >>> [(r.seed, r.kills, r.workers) for r in default_runs(14, seed=1)]
    [(1, 6, 1), (2, 6, 2), (3, 2, 1)]
    """
    runs: list[KillRun] = []
    while (done := sum(r.kills for r in runs)) < trials:
        runs.append(KillRun(seed=seed + len(runs), kills=min(6, trials - done), workers=1 + len(runs) % 2))
    return runs
