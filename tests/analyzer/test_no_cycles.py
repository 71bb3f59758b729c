"""Closed decoders must not form reference cycles: analyze() no longer runs periodic
gc.collect() (memory stays flat on long captures by reference counting alone)."""

from __future__ import annotations

import gc
from collections import Counter
from pathlib import Path

import pytest

from vimprof.analyzer.pipeline import analyze

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURES = sorted(DATA.glob("*/capture.pcap"))


@pytest.mark.parametrize("capture", CAPTURES, ids=[p.parent.name for p in CAPTURES])
def test_no_cyclic_garbage(capture: Path) -> None:
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        n = [0]

        def sink(_tl: dict) -> None:
            n[0] += 1

        analyze(capture, on_timeline=sink)
        gc.collect()
        kinds = Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was:
            gc.enable()
    assert n[0] > 0  # the capture did produce timelines (decoders were opened and closed)
    assert not kinds, f"objects only freed by the cycle collector: {kinds.most_common(10)}"
