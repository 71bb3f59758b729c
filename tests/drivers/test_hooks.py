"""HooksTail (the campaign's reader of the plugin's hooks file) and the floor probe."""

from __future__ import annotations

import json
import shutil

import pytest

from vimprof import paths
from vimprof.drivers.hooks import HooksTail, floor_probe
from vimprof.pushers.nomad import GuestSpec, job_spec


def _line(alloc: str, hook: str, t: int) -> bytes:
    rec = {"t_ns": t, "end_ns": t + 5, "hook": hook, "alloc_id": alloc}
    return (json.dumps(rec) + "\n").encode()


def test_tail_hands_out_each_allocations_lines_once(tmp_path):
    f = tmp_path / "hooks.jsonl"
    f.write_bytes(_line("old", "spawn", 1))  # before the campaign: never handed out
    tail = HooksTail(f)
    with open(f, "ab") as fh:
        fh.write(_line("a", "init_environment", 10) + _line("b", "spawn", 11))
        fh.write(_line("a", "spawn", 12)[:20])  # being written
    assert [r["hook"] for r in tail.take("a")] == ["init_environment"]
    with open(f, "ab") as fh:
        fh.write(_line("a", "spawn", 12)[20:] + b"not json\n" + b"[1, 2]\n")
    assert [r["t_ns"] for r in tail.take("a")] == [12]
    assert tail.take("a") == []
    assert tail.bad_lines == 2
    assert [r["alloc_id"] for r in tail.take_all({"b", "old"})] == ["b"]
    assert tail.take(None) == []


def test_tail_of_a_missing_file_is_empty(tmp_path):
    tail = HooksTail(tmp_path / "absent.jsonl")
    assert tail.take("a") == []
    (tmp_path / "absent.jsonl").write_bytes(_line("a", "clean", 3))
    assert [r["hook"] for r in tail.take("a")] == ["clean"]  # created later: read from start


def test_xen_job_specs():
    stock = job_spec("j", GuestSpec(kernel="/lab/images/testvnf.elf", driver="xen-stock",
                                    artifact_url="http://198.18.0.1:8080/testvnf.elf"))
    task = stock["TaskGroups"][0]["Tasks"][0]
    assert task["Driver"] == "xen"
    assert task["Config"] == {"backend": "qemu", "kernel": "testvnf.elf",
                              "ready_line": "vimprof-testvnf: ready"}
    assert task["Artifacts"] == [{"GetterSource": "http://198.18.0.1:8080/testvnf.elf",
                                  "RelativeDest": "local/"}]
    tuned = job_spec("j", GuestSpec(kernel="/lab/images/testvnf.elf", driver="xen-tuned"))
    assert "Artifacts" not in tuned["TaskGroups"][0]["Tasks"][0]
    with pytest.raises(ValueError, match="artifact_url"):
        job_spec("j", GuestSpec(kernel="/k", driver="xen-stock"))
    with pytest.raises(ValueError, match="driver must be"):
        job_spec("j", GuestSpec(kernel="/k", driver="docker"))


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")
def test_floor_probe_boots_the_guest_directly():
    rec = floor_probe(paths.testvnf_kernel(), "tcg", 128, run=7)
    assert rec["probe"] == "floor" and rec["hook"] == "spawn" and rec["run"] == 7
    ms = (rec["end_ns"] - rec["t_ns"]) / 1e6
    assert 1 < ms < 10_000  # a real boot: QEMU start plus the guest's first serial line
