"""`vimprof analyze` with extra captures, clock offsets and cross-check options."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from vimprof.analyzer.sources.merge import parse_capture_arg
from vimprof.cli import cli
from vimprof.errors import VimprofError

LAB = Path(__file__).parent.parent / "data" / "nomad-lab-3runs"


def test_parse_capture_arg(tmp_path):
    assert parse_capture_arg("a.pcap") == (Path("a.pcap"), 0)
    assert parse_capture_arg("b.pcap@-3.5") == (Path("b.pcap"), -3_500_000)
    odd = tmp_path / "x@y.pcap"
    odd.write_bytes(b"")
    assert parse_capture_arg(str(odd)) == (odd, 0)  # an existing file keeps its '@'
    with pytest.raises(VimprofError, match="FILE@OFFSET_MS"):
        parse_capture_arg("c.pcap@soon")


def test_cli_analyze_merges_a_second_capture(tmp_path):
    run = tmp_path / "lab3"
    shutil.copytree(LAB, run)
    other = tmp_path / "client-side.pcap"
    shutil.copy(LAB / "capture.pcap", other)
    res = CliRunner().invoke(cli, ["analyze", str(run), "--capture", f"{other}@0",
                                   "--tolerance-ms", "20"])
    assert res.exit_code == 0, res.output
    assert "3 timelines (0 incomplete) from 808 packets" in res.output
    res = CliRunner().invoke(cli, ["analyze", str(run), "--capture", f"{other}@later"])
    # the CLI's main() turns VimprofError into one stderr line and exit status 2
    assert isinstance(res.exception, VimprofError) and "FILE@OFFSET_MS" in str(res.exception)
