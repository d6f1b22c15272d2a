"""`driftwarden demo` stops on SIGTERM or Ctrl-C even when the interrupt lands where Python drops it."""

from __future__ import annotations

import gc
import signal
import sys

import pytest

from driftwarden import demo


def test_an_interrupt_a_finalizer_swallowed_still_stops_the_demo(monkeypatch):
    """The integration test's SIGTERM came, under load, while an asyncio transport's ``__del__`` ran: Python printed
    the KeyboardInterrupt as "Exception ignored in" and went on, and the demo served until its 60 s timeout. The
    signal is remembered: the next step of the set-up raises it, and the serving loop ends."""

    class Finalized:
        def __del__(self) -> None:
            demo._interrupt(signal.SIGTERM, None)

    dropped: list[sys.UnraisableHookArgs] = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)  # (where Python reports what it ignores)
    demo._STOP.clear()
    try:
        Finalized()  # (dropped at once: its __del__ raises, Python ignores it)
        gc.collect()
        assert [type(d.exc_value) for d in dropped] == [KeyboardInterrupt]
        with pytest.raises(KeyboardInterrupt):
            demo._stop_if_asked()
        demo._serve_until_interrupted(demo.Clock(), "http://127.0.0.1:1/")  # returns at once: the stop was asked
    finally:
        demo._STOP.clear()
    demo._stop_if_asked()  # (nothing asked: nothing raised)
