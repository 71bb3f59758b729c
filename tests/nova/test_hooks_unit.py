"""Unit tests of the Nova driver's hook emitter and the campaign's hook collector (no lab)."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest

from vimprof.campaigns.nova import nova_hooks
from vimprof.drivers.nova import hooks


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_span_records_interval_with_spec_shape(tmp_path):
    f = tmp_path / "h.jsonl"
    before = time.time_ns()
    with hooks.span("generate_xml", "u-1", "tuned", path=str(f)):
        time.sleep(0.02)
    after = time.time_ns()
    (rec,) = _lines(f)
    assert set(rec) == {"t_ns", "end_ns", "hook", "instance_uuid", "driver", "variant"}
    assert rec["hook"] == "generate_xml" and rec["instance_uuid"] == "u-1"
    assert rec["driver"] == "nova-diskless" and rec["variant"] == "tuned"
    assert before <= rec["t_ns"] < rec["end_ns"] <= after
    assert rec["end_ns"] - rec["t_ns"] >= 20_000_000


def test_span_records_failure_and_reraises(tmp_path):
    f = tmp_path / "h.jsonl"
    with pytest.raises(ZeroDivisionError), hooks.span("libvirt_spawn", "u", "stock",
                                                      path=str(f)):
        1 / 0  # noqa: B018
    (rec,) = _lines(f)
    assert rec["error"] == "ZeroDivisionError" and rec["hook"] == "libvirt_spawn"


def test_unwritable_file_never_raises(tmp_path):
    rec = hooks.record("spawn", "u", "stock", 1, 2, path=str(tmp_path / "no" / "dir" / "h"))
    assert rec["end_ns"] == 2


def test_default_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(hooks.ENV_FILE, str(tmp_path / "env.jsonl"))
    hooks.record("wait_boot", "u", "tuned", 5, 9)
    assert _lines(tmp_path / "env.jsonl")[0]["t_ns"] == 5


def _writer(path: str, n: int, who: int) -> None:
    for i in range(n):
        hooks.record("create_image", f"inst-{who}", "stock", i, i + 1, path=path,
                     pad="x" * 3000)


def test_concurrent_writers_never_interleave(tmp_path):
    f = tmp_path / "h.jsonl"
    procs = [multiprocessing.Process(target=_writer, args=(str(f), 200, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    recs = _lines(f)  # a torn line would not parse
    assert len(recs) == 800
    assert {r["instance_uuid"] for r in recs} == {f"inst-{w}" for w in range(4)}


def test_collector_hands_out_own_instances_once_and_skips_old_lines(tmp_path):
    f = tmp_path / "h.jsonl"
    hooks.record("spawn", "old", "stock", 1, 2, path=str(f))  # before the campaign
    c = nova_hooks(str(f))
    hooks.record("spawn", "a", "stock", 3, 4, path=str(f))
    hooks.record("spawn", "b", "stock", 5, 6, path=str(f))
    with open(f, "a") as fh:
        fh.write('{"t_ns": 7, "hook": "spawn", "instance_uuid": "a"')  # being written
    got = c.take_all({"a", "old"})
    assert [(r["instance_uuid"], r["instance"]) for r in got] == [("a", "a")]
    assert c.take_all({"a"}) == []
    with open(f, "a") as fh:
        fh.write(', "end_ns": 8}\n')
    assert [r["t_ns"] for r in c.take_all({"a", "b"})] == [7, 5]


def test_collector_without_file():
    assert nova_hooks(None).take_all({"x"}) == []
