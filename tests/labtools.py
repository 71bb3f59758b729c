"""Helpers the lab tests share (a plain module: `conftest` names clash between test folders)."""

from __future__ import annotations

import os
import shutil


def lab_unavailable() -> str | None:
    """Why the real lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the Nomad lab needs root (network namespaces)"
    for tool in ("ip", "tcpdump", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: run scripts/setup"
    return None
