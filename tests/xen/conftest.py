"""Fixtures for the real Xen lab (vimprof.lab.xen): one lab per machine, behind a lock file."""

from __future__ import annotations

import fcntl
import os
import shutil

import pytest

# One Xen lab per machine (namespace hostx, /tmp/vimprof/xen): concurrent sessions take turns.
XEN_LAB_LOCK = "/tmp/vimprof-xen-lab.lock"


def xen_lab_unavailable() -> str | None:
    """Why the real Xen lab cannot run here, or None."""
    from vimprof.lab import xen

    if os.geteuid() != 0:
        return "the Xen lab needs root (network namespace, tap device)"
    if not xen.images_ready():
        return ("scripts/setup-xen has not run: no Xen lab images in "
                "$VIMPROF_CACHE/xen/current (run scripts/setup-xen)")
    for tool in ("ip", "socat", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: run scripts/setup-xen"
    try:
        import pyxs  # noqa: F401
    except ImportError:
        return "pyxs is missing: pip install -e '.[xen]' (scripts/setup)"
    return None


@pytest.fixture(scope="session")
def xen_lab_lock():
    """Skip unless the Xen lab can run here; then hold the machine-wide Xen lab lock."""
    reason = xen_lab_unavailable()
    if reason:
        pytest.skip(reason)
    with open(XEN_LAB_LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def _xen_lab_session(xen_lab_lock):
    """Takes the Xen lab down at the end of the session."""
    from vimprof.lab import xen

    yield
    xen.down()


@pytest.fixture
def xen_lab(_xen_lab_session):
    """A running Xen lab (vimprof.lab.xen.XenLabState): the one already up, else a new one
    (a test before may have taken it down on purpose: failing boots, the tear-down check)."""
    from vimprof.lab import xen

    return xen.current() or xen.up()
