"""A full disk while timelines are written: a clear error, no half-written timelines.jsonl and
no temporary file left (the capture and the rest of the run directory untouched)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vimprof.analyzer.pipeline import analyze_run
from vimprof.analyzer.sink import SpoolError
from vimprof.rundir import RunDir

RUN = Path(__file__).parent.parent / "data" / "nomad-lab-3runs"


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB tmpfs (filled up by the test)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_is_a_clear_error_and_leaves_nothing_behind(tiny_fs):
    run = tiny_fs / "run"
    shutil.copytree(RUN, run)
    before = sorted(p.name for p in run.iterdir())
    filler = tiny_fs / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill what is left but a few KB
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(filler, filler.stat().st_size - 16384)  # a little room: the spool starts
    with pytest.raises(SpoolError, match="free space there and run `vimprof analyze` again"):
        analyze_run(RunDir(run))
    assert sorted(p.name for p in run.iterdir()) == before
    assert (run / "capture.pcap").read_bytes() == (RUN / "capture.pcap").read_bytes()
