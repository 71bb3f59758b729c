"""Which QEMU accelerator boots the test micro-VNF fastest on this machine: measure, don't assume.

/dev/kvm existing says little: under nested or software virtualisation (e.g. PVM) KVM works but
can be far slower than QEMU's TCG emulator for a guest as tiny as images/clickos/testvnf.elf.
So both are timed from QEMU launch to the guest's readiness line on its serial port, the faster
median wins, and the decision is cached as JSON under vimprof.paths.cache_root() (accel.json),
keyed by the kernel's sha256, the QEMU version, the host name and whether KVM is usable, so later
calls return at once without starting a guest.

All durations are milliseconds (float).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import platform
import selectors
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vimprof.errors import VimprofError
from vimprof.paths import cache_root

QEMU = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
READY_LINE = b"vimprof-testvnf: ready\r\n"
ACCELERATORS = ("tcg", "kvm")

KVM_DEVICE = Path("/dev/kvm")
KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO=0xAE, 0x00)
KVM_API_VERSION = 12

CACHE_FILE = "accel.json"
_CACHE_FORMAT = 1

_launches = 0  # QEMU guests started by this process (see qemu_launches())


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator to boot micro-VNFs with, and the evidence for it.

    accel:      "tcg" or "kvm".
    tcg_ms:     median boot-to-ready time under TCG, ms.
    kvm_ms:     median boot-to-ready time under KVM, ms; None when KVM was not usable or failed.
    reason:     one human-readable sentence explaining the choice.
    from_cache: True when the choice was read from the cache instead of measured (not part of
                equality).
    """

    accel: str
    tcg_ms: float
    kvm_ms: float | None
    reason: str
    from_cache: bool = field(default=False, compare=False)


def qemu_launches() -> int:
    """Number of QEMU guests this process has started through this module (a counter)."""
    return _launches


def qemu_binary() -> Path:
    """Path of qemu-system-x86_64 on PATH.

    Raises VimprofError (saying to install qemu-system-x86) when it is missing.
    """
    found = shutil.which(QEMU)
    if not found:
        raise VimprofError(
            f"{QEMU} not found on PATH: install {QEMU_PACKAGE} (apt-get install {QEMU_PACKAGE})"
        )
    return Path(found)


def qemu_command(kernel: Path, accel: str, qemu: Path | str = QEMU,
                 memory_mb: int = 128) -> list[str]:
    """The argv that boots `kernel` diskless under `accel`, guest serial port on QEMU's stdout."""
    return [
        str(qemu),
        "-machine", f"accel={accel}",
        "-m", str(memory_mb),
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial", "stdio",
        "-kernel", str(kernel),
    ]  # fmt: skip


def kvm_usable() -> bool:
    """True when /dev/kvm exists, opens read-write and reports KVM API version 12.

    Says nothing about speed (see choose_accelerator). Never raises.
    """
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION) == KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def measure_boot_ms(kernel: Path, accel: str, runs: int = 3, timeout_s: float = 30) -> list[float]:
    """Boot `kernel` `runs` times under `accel`; return each launch-to-ready time in ms.

    Each run starts `qemu_command(kernel, accel)` and stops the clock when the guest's readiness
    line (READY_LINE) appears on QEMU's stdout; QEMU is then killed and reaped, also when a run
    fails or is interrupted, so no process outlives the call.

    Raises ValueError for an unknown accel or runs < 1, and VimprofError when qemu-system-x86_64
    is missing, the kernel file is missing, QEMU exits early, or the guest does not print its
    readiness line within `timeout_s` seconds.
    """
    if accel not in ACCELERATORS:
        raise ValueError(f"accel must be one of {ACCELERATORS}, not {accel!r}")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, not {runs}")
    qemu = qemu_binary()
    kernel = Path(kernel)
    if not kernel.is_file():
        raise VimprofError(
            f"no test micro-VNF kernel at {kernel}: build it with images/clickos/build.sh"
        )
    ms = []
    for _ in range(runs):
        start_ns, ready_ns = boot_once(qemu, kernel, accel, timeout_s)
        ms.append((ready_ns - start_ns) / 1e6)
    return ms


def boot_once(qemu: Path, kernel: Path, accel: str, timeout_s: float,
              memory_mb: int = 128) -> tuple[int, int]:
    """Boot `kernel` once: (launch, readiness line seen) as ns since the epoch.

    The interval is measured on the monotonic clock and anchored at the launch's wall-clock
    instant. QEMU is killed and reaped before returning. Raises VimprofError as
    measure_boot_ms does.
    """
    global _launches
    argv = qemu_command(kernel, accel, qemu, memory_mb)
    start_ns = time.time_ns()
    start = time.monotonic()
    deadline = start + timeout_s
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a terminal's Ctrl-C reaches us, not QEMU; we kill it ourselves
    )
    _launches += 1
    out = bytearray()
    err = bytearray()
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VimprofError(
                        f"the guest did not print its ready line within {timeout_s:g} s "
                        f"under {accel} ({' '.join(argv)}): check the kernel boots by hand "
                        "(images/clickos/README.md) or raise the timeout" + _tail(out, err)
                    )
                events = sel.select(left)
                for key, _ in events:
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    key.data.extend(chunk)
                    if key.data is out and READY_LINE in out:
                        return start_ns, start_ns + int((time.monotonic() - start) * 1e9)
                if not sel.get_map():  # both pipes closed: QEMU has exited
                    rc = proc.wait()
                    raise VimprofError(
                        f"QEMU exited with status {rc} before the guest was ready under "
                        f"{accel} ({' '.join(argv)})" + _tail(out, err)
                    )
    finally:
        _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    finally:
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def _tail(out: bytes | bytearray, err: bytes | bytearray, n: int = 300) -> str:
    parts = []
    if err.strip():
        parts.append(f"stderr: {bytes(err[-n:]).decode(errors='replace').strip()}")
    if out.strip():
        parts.append(f"serial: {bytes(out[-n:]).decode(errors='replace').strip()!r}")
    return ("; " + "; ".join(parts)) if parts else ""


@functools.lru_cache(maxsize=8)
def _qemu_version(qemu: str, mtime_ns: int, size: int) -> str:
    try:
        res = subprocess.run(
            [qemu, "--version"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise VimprofError(f"could not run {qemu} --version ({e}): reinstall {QEMU_PACKAGE}") from e
    return res.stdout.splitlines()[0].strip() if res.stdout.strip() else "unknown"


def qemu_version() -> str:
    """First line of `qemu-system-x86_64 --version` (memoised per binary).

    Raises VimprofError when QEMU is missing or does not run.
    """
    q = qemu_binary()
    st = q.stat()
    return _qemu_version(str(q), st.st_mtime_ns, st.st_size)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_cache() -> Path:
    """Where choose_accelerator caches decisions by default: cache_root()/accel.json."""
    return cache_root() / CACHE_FILE


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _store_cache(path: Path, entries: dict[str, Any]) -> None:
    """Write atomically (temp file + rename); a cache that cannot be written is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"format": _CACHE_FORMAT, "entries": entries}, f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def _from_entry(entry: Any) -> AccelChoice | None:
    try:
        choice = AccelChoice(
            accel=str(entry["accel"]),
            tcg_ms=float(entry["tcg_ms"]),
            kvm_ms=None if entry["kvm_ms"] is None else float(entry["kvm_ms"]),
            reason=str(entry["reason"]),
            from_cache=True,
        )
    except (TypeError, KeyError, ValueError):
        return None
    return choice if choice.accel in ACCELERATORS else None


def choose_accelerator(
    kernel: Path, cache: Path | None = None, runs: int = 3, timeout_s: float = 30
) -> AccelChoice:
    """Pick "tcg" or "kvm" for booting `kernel`, by measured median boot-to-ready time (ms).

    TCG is always measured (`runs` boots); KVM too when kvm_usable(). The faster median wins;
    TCG wins ties and whenever KVM is unusable or fails to boot the guest. The decision is cached
    in `cache` (default: default_cache()) keyed by the kernel's sha256, the QEMU version, the host
    name and KVM usability; a cache hit returns at once (from_cache=True) without starting QEMU.
    An unreadable cache is ignored and an unwritable one skipped.

    Raises VimprofError when qemu-system-x86_64 is missing, the kernel is missing, or the guest
    does not boot to its ready line under TCG within `timeout_s` seconds; ValueError for runs < 1.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, not {runs}")
    kernel = Path(kernel)
    version = qemu_version()
    if not kernel.is_file():
        raise VimprofError(
            f"no test micro-VNF kernel at {kernel}: build it with images/clickos/build.sh"
        )
    cache = default_cache() if cache is None else Path(cache)
    kvm_ok = kvm_usable()
    key = "|".join([_sha256(kernel), version, platform.node(), f"kvm={'yes' if kvm_ok else 'no'}"])

    entries = _load_cache(cache)
    hit = _from_entry(entries.get(key))
    if hit is not None:
        return hit

    tcg_runs = measure_boot_ms(kernel, "tcg", runs, timeout_s)
    tcg_ms = statistics.median(tcg_runs)
    kvm_runs: list[float] | None = None
    kvm_ms: float | None = None
    if not kvm_ok:
        accel = "tcg"
        reason = (
            f"KVM not usable ({KVM_DEVICE} missing, unopenable or wrong API version); "
            f"tcg median boot-to-ready {tcg_ms:.1f} ms over {runs} run(s)"
        )
    else:
        try:
            kvm_runs = measure_boot_ms(kernel, "kvm", runs, timeout_s)
        except VimprofError as e:
            accel = "tcg"
            reason = f"KVM is usable but failed to boot the guest: {e}"
        else:
            kvm_ms = statistics.median(kvm_runs)
            accel = "kvm" if kvm_ms < tcg_ms else "tcg"
            faster, slower = sorted([tcg_ms, kvm_ms])
            reason = (
                f"{accel} is faster: median boot-to-ready {faster:.1f} ms vs {slower:.1f} ms "
                f"over {runs} run(s) each"
            )
    choice = AccelChoice(accel=accel, tcg_ms=tcg_ms, kvm_ms=kvm_ms, reason=reason)

    entry = asdict(choice)
    del entry["from_cache"]
    entry.update(
        kernel=str(kernel.resolve()),
        qemu_version=version,
        host=platform.node(),
        tcg_runs_ms=tcg_runs,
        kvm_runs_ms=kvm_runs,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    entries = _load_cache(cache)  # re-read: another process may have added entries meanwhile
    entries[key] = entry
    _store_cache(cache, entries)
    return choice
