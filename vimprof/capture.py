"""Packet capture at the VIM core host during a campaign.

A tcpdump subprocess (optionally inside a network namespace) writes a pcap with nanosecond
timestamps, packet-buffered (-U) so that a campaign killed halfway leaves a readable file. tcpdump
rather than Scapy's sniffer: the kernel stamps the packets and nothing in Python sits on the
packet path, so the capture neither drops nor delays under a busy campaign on two cores.
"""

from __future__ import annotations

import ctypes
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

from vimprof.errors import VimprofError

START_TIMEOUT_S = 10.0
RING_KIB = 32768  # capture ring buffer (tcpdump -B), KiB
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Capture:
    """tcpdump writing `path` from `iface` (in `netns`, if given) with a BPF `bpf` filter.

    Use as a context manager; `stop()` flushes and closes the file. Raises VimprofError when
    tcpdump is missing or cannot open the interface.
    """

    def __init__(self, path: Path, iface: str, bpf: str, netns: str | None = None):
        self.path, self.iface, self.bpf, self.netns = path, iface, bpf, netns
        self._proc: subprocess.Popen[bytes] | None = None
        self.stats: dict[str, int] = {}  # tcpdump's own counts at exit: captured, dropped ...

    def start(self) -> Capture:
        tcpdump = shutil.which("tcpdump")
        if tcpdump is None:
            raise VimprofError("tcpdump is missing: run scripts/setup (or apt-get install tcpdump)")
        # --immediate-mode: without it libpcap (TPACKET_V3) hands packets over in blocks, and
        # the block still filling when tcpdump stops (the campaign's last messages) is lost.
        # -B: with -s 0 every ring frame is 256 KiB, so the default 2 MiB ring holds ~8 packets
        # and the kernel drops while QEMU keeps both cores busy.
        cmd = [tcpdump, "-i", self.iface, "--immediate-mode", "-B", str(RING_KIB), "-U", "-n",
               "-s", "0",
               "--time-stamp-precision=nano", "-w", str(self.path), self.bpf]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to vimprof, which stops the capture itself
            preexec_fn=_stop_with_parent,
        )
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        """tcpdump says "listening on IFACE" on stderr once the socket is open."""
        assert self._proc and self._proc.stderr
        deadline = time.monotonic() + START_TIMEOUT_S
        seen = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._proc.stderr], [], [], 0.1)
            if ready:
                chunk = self._proc.stderr.read1(4096)  # type: ignore[attr-defined]
                seen += chunk
                if b"listening on" in seen:
                    return
                if not chunk:
                    break
        self.stop()
        where = f" in namespace {self.netns}" if self.netns else ""
        raise VimprofError(
            f"tcpdump could not capture on {self.iface}{where}: "
            f"{seen.decode(errors='replace').strip() or 'no answer'}"
        )

    def stop(self, linger_s: float = 0.5) -> None:
        """Stop tcpdump (SIGINT makes it flush and close the pcap) after `linger_s` seconds for
        packets still in flight; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            time.sleep(linger_s)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            self.stats = _parse_stats(proc.stderr.read().decode(errors="replace"))
            proc.stderr.close()

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_with_parent() -> None:
    """In the child before exec: SIGINT (tcpdump flushes and closes the pcap) when the thread
    that started the capture dies, so a vimprof killed with SIGKILL leaves no tcpdump behind
    (prctl(2) PR_SET_PDEATHSIG; kept across the exec of `ip netns exec` and tcpdump, which are
    not set-user-ID)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGINT)


def _parse_stats(text: str) -> dict[str, int]:
    """tcpdump's exit lines ("12 packets captured", "0 packets dropped by kernel") as a dict."""
    stats = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0].isdigit() and words[1] == "packets":
            stats["_".join(words[2:])] = int(words[0])
    return stats
