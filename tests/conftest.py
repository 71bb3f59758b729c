"""Shared fixtures: the real Nomad lab, brought up once per test session and torn down after."""

from __future__ import annotations

import os
import shutil

import pytest


def lab_unavailable() -> str | None:
    """Why the real lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the Nomad lab needs root (network namespaces)"
    for tool in ("ip", "tcpdump", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: run scripts/setup"
    return None


@pytest.fixture
def lab_possible() -> None:
    """Skip unless the real lab can run here."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def nomad_lab():
    """A running Nomad lab (vimprof.lab.nomad.LabState); down at the end of the session."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    from vimprof.lab import nomad as lab

    state = lab.up()
    yield state
    lab.down()
