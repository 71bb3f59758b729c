"""The Nomad lab's life cycle on the real machine: up is idempotent, down leaves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from vimprof.lab import netns
from vimprof.lab import nomad as lab

pytestmark = pytest.mark.lab


def lab_processes() -> list[int]:
    """PIDs of any process whose command line mentions the lab directory."""
    marker = str(lab.lab_dir()).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_up_twice_then_down_leaves_nothing(lab_possible):
    first = lab.up()
    again = lab.up()
    assert (again.server_pid, again.client_pid) == (first.server_pid, first.client_pid)
    status = lab.status()
    assert status["running"] is True
    assert status["leader"] == f"{lab.SERVER_IP}:{lab.RPC_PORT}"
    assert status["nodes"] == {"hostl": "ready"}
    # server-client RPC crosses the hostc-hostl veth: the client reaches the server there only
    route = netns.ip("-n", lab.CLIENT_NS, "route", "get", lab.SERVER_IP).stdout
    assert "dev vp-data" in route
    assert "default" not in netns.ip("-n", lab.CLIENT_NS, "route").stdout

    done = lab.down()
    assert any("deleted namespace hostc" in line for line in done)
    assert not netns.exists(lab.SERVER_NS) and not netns.exists(lab.CLIENT_NS)
    assert lab_processes() == []
    assert lab.current() is None
    assert lab.status()["running"] is False
    assert lab.down() == []  # idempotent
