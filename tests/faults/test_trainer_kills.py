"""kill -9 of a real trainer worker mid-command, then a restart (issue 14).

Each trial sends one retrain command and kills the worker at a seeded random moment inside the work:
after the line that says it reached a phase (reading its window, registered the version, published the
verdict), plus a seeded pause of up to 0.3 s; each phase once, in a seeded order. The
worker is restarted at once. Afterwards, from the topics and the registry alone: every command has a
verdict and all verdicts of one command agree (a command whose offset was not committed is replayed
and republishes the same verdict), no command registered two versions, every version is whole, every
verdict names the registered version's sha256, the champion is the newest promoted version, and the
restarted worker answers one more command.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections import Counter

import pytest
from fault_brokers import STEP_TIMEOUT_S, send_records, wait_for_line
from service_trials import Service, read_events, trial_settings

from driftwarden.bench.invariants import registry_problems, verdict_problems
from driftwarden.core.events import ModelPublished, RetrainCommand, TrainingWindow
from driftwarden.registry.store import ModelRegistry
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.producer import example_envelopes
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration

SEED = 1404
MODEL = "trained-under-fire"
#: What the trainer logs when a command reaches each phase (driftwarden.trainer.service and .workflow):
#: its window is being read (the pause takes the kill into the read or the training), the version is
#: registered, the verdict is published (a kill then lands before or after the command is committed).
PHASES = {
    "reading": "command {id} for ",
    "registered": "command {id}: " + MODEL + " v",
    "published": r"\(command {id}\)",
}


def command(key: str) -> RetrainCommand:
    return RetrainCommand(command_id=str(uuid.uuid4()), idempotency_key=f"{MODEL}:{key}", model_id=MODEL,
                          model_version="1", ts=time.time(), reasons=["0123456789abcdef"],
                          window=TrainingWindow(start_ts=0, end_ts=2e9))  # fmt: skip


def verdicts_of(settings, command_id: str) -> list[ModelPublished]:
    return [v for v in read_events(settings, settings.topics.models, ModelPublished) if v.command_id == command_id]


def wait_for_verdict(settings, trainer: Service, command_id: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not verdicts_of(settings, command_id):
        assert trainer.alive(), f"the trainer died: {trainer.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no verdict for {command_id}: {trainer.log.read_text()[-3000:]}"
        time.sleep(0.5)


def test_a_trainer_killed_mid_command_gives_every_command_one_verdict_and_registers_nothing_twice(
    service_broker, tmp_path
):
    settings = trial_settings(service_broker, tmp_path, "trainer-kills")
    registry = ModelRegistry(settings.registry_dir)
    stable = [e | {"model_id": MODEL} for chunk in generate(Scenario(n_events=3_000, seed=1))
              for e in chunk.training_examples()]  # fmt: skip
    assert bootstrap(registry, MODEL, stable, TrainerConfig()).status == "promoted"
    drifted = [e | {"model_id": MODEL} for chunk in generate(Scenario(name="concept-drift", n_events=6_000, onset=0,
               seed=2)) for e in chunk.training_examples()]  # fmt: skip
    for topic, messages in zip((settings.topics.predictions, settings.topics.labels), example_envelopes(drifted, 500),
                               strict=True):  # fmt: skip
        send_records(settings, topic, [(MODEL.encode(), message) for message in messages])

    rng = random.Random(SEED)
    trainer = Service(["trainer", "--metrics-port", "0"], settings, tmp_path, "trainer")
    commands, landed = [], []
    try:
        for phase in rng.sample(sorted(PHASES), len(PHASES)):  # every phase once, in a seeded order
            sent = command(f"kill-{phase}")
            commands.append(sent.command_id)
            send_records(settings, settings.topics.retrain_commands, [(MODEL.encode(), sent.to_json())])
            wait_for_line(trainer.log, re.compile(PHASES[phase].format(id=sent.command_id)), trainer.process)
            time.sleep(rng.uniform(0, 0.3))
            trainer.kill()
            text = trainer.log.read_text()
            landed.append(max((p for p in PHASES if re.search(PHASES[p].format(id=sent.command_id), text)),
                              key=list(PHASES).index))  # fmt: skip
            trainer.restart()
            wait_for_verdict(settings, trainer, sent.command_id)
        after = command("after-the-kills")
        commands.append(after.command_id)
        send_records(settings, settings.topics.retrain_commands, [(MODEL.encode(), after.to_json())])
        wait_for_verdict(settings, trainer, after.command_id)
        assert trainer.alive()
    finally:
        trainer.stop()

    verdicts = [v for v in read_events(settings, settings.topics.models, ModelPublished) if v.command_id in commands]
    print(f"kills landed after: {landed}; {len(verdicts)} verdicts for {len(commands)} commands")
    assert verdict_problems(commands, verdicts) == []
    assert registry_problems(registry, MODEL, verdicts) == []
    assert len(verdicts_of(settings, after.command_id)) == 1  # committed with its verdict: exactly one
    # Answered again only by the restart after its own kill: a command is committed with its verdict,
    # not after the next command arrived (then every restart answered the last command again).
    assert max(Counter(v.command_id for v in verdicts).values()) <= 2, Counter(v.command_id for v in verdicts)
    assert len(registry.versions(MODEL)) == 1 + len(commands)  # the bootstrap, then one per command
