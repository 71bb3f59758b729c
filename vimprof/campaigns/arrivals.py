"""Arrival processes: when a campaign sends its instantiation requests (`--arrival SPEC`).

The paper this tool follows measured one request at a time on an unloaded VIM and named
"batches of incoming requests with given rates (requests/s) and arrival patterns" as the next
step (Ventre et al. 2016, section VII). A spec string names one process:

    sequential          one request at a time (today's campaigns): closed:1
    closed:C            C concurrent clients, each sends its next request when its instance
                        is gone (closed loop: the VIM paces the load)
    rate:R              open loop, R requests/s, constant gaps of exactly 1/R s
    poisson:R           open loop, exponential gaps of mean 1/R s (seeded, the seed recorded)
    burst:N@T           open loop, N requests at once every T s
    rate:R1..R2/Ds      open loop, rate linear from R1 to R2 requests/s over D s, then ends
    poisson:R1..R2/Ds   the same as a non-homogeneous Poisson process

Open versus closed loop (Schroeder, Wierman, Harchol-Balter, "Open Versus Closed: A Cautionary
Tale", NSDI 2006): in a closed loop a new request waits for an earlier one to finish, so a slow
VIM slows the generator down and its slowness hides in fewer samples; in an open loop the
arrivals do not depend on completions. That hiding is what Gil Tene calls coordinated omission
("How NOT to Measure Latency", 2013/2015): the open-loop engine (vimprof.campaigns.openloop)
records each request's intended and actual send instants so a lagging generator shows.

Open processes produce intended send offsets (int ns from the campaign start) lazily with
`offsets_ns()`; closed ones (`Closed`, incl. sequential) have no schedule, only a number of
clients (`concurrency`). Every process has `describe()` (JSON-serialisable, for the manifest)
and `max_rate()` (requests/s, for the engine's feasibility check; None for closed loops).
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vimprof.errors import VimprofError

NS = 1_000_000_000
EXAMPLES = ("sequential, closed:4, rate:20, poisson:20, burst:10@5s, rate:1..20/60s, "
            "poisson:1..20/60s")
_CHUNK = 1024  # exponential draws per numpy call (fixed: the sequence depends on the seed only)


class ArrivalProcess:
    """Base of every arrival process.

    `concurrency`: None for an open loop (a schedule), the number of clients for a closed loop.
    `burst`: how many requests share one intended instant at most (N for burst:N@T, else 1).
    `duration_s`: the schedule's own length in s (ramps), None when it runs until a bound.
    """

    kind: str = ""
    concurrency: int | None = None
    burst: int = 1
    duration_s: float | None = None

    @property
    def open(self) -> bool:
        """True for a schedule (open loop), False for clients (closed loop)."""
        return self.concurrency is None

    def offsets_ns(self, max_runs: int | None = None,
                   max_duration_s: float | None = None) -> Iterator[int]:
        """Intended send offsets, int ns from the campaign start, non-decreasing, lazily;
        at most `max_runs` of them, all < `max_duration_s` (the bounds given, plus the
        schedule's own `duration_s`)."""
        limit = _limit_ns(max_duration_s, self.duration_s)
        for k, off in enumerate(self._offsets()):
            if max_runs is not None and k >= max_runs:
                return
            if limit is not None and off >= limit:
                return
            yield off

    def _offsets(self) -> Iterator[int]:
        raise TypeError(f"{self.kind} is a closed loop: it has clients, not a schedule")

    def max_rate(self) -> float | None:
        """The highest rate the schedule asks for, requests/s (a burst's mean rate N/T; a
        Poisson process's mean rate); None for a closed loop (the VIM sets its pace)."""
        return None

    def describe(self) -> dict[str, Any]:
        """The process for the manifest: {"kind": ..., "spec": ..., parameters}."""
        raise NotImplementedError


def _limit_ns(*durations_s: float | None) -> int | None:
    given = [d for d in durations_s if d is not None]
    return round(min(given) * NS) if given else None


@dataclass(frozen=True)
class Closed(ArrivalProcess):
    """`clients` concurrent clients, each sending its next request as soon as its previous
    one returned (closed loop). `sequential` is Closed(1)."""

    clients: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "concurrency", self.clients)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "sequential" if self.clients == 1 else "closed"

    def describe(self) -> dict[str, Any]:
        spec = "sequential" if self.clients == 1 else f"closed:{self.clients}"
        return {"kind": self.kind, "spec": spec, "loop": "closed", "clients": self.clients}


@dataclass(frozen=True)
class Constant(ArrivalProcess):
    """`rate` requests/s with constant gaps: offsets round(k * 1e9 / rate) ns, k = 0, 1, ...
    (the first at the start)."""

    rate: float
    kind = "rate"

    def _offsets(self) -> Iterator[int]:
        k = 0
        while True:
            yield round(k * NS / self.rate)
            k += 1

    def max_rate(self) -> float:
        return self.rate

    def describe(self) -> dict[str, Any]:
        return {"kind": "rate", "spec": f"rate:{_num(self.rate)}", "loop": "open",
                "rate_rps": self.rate}


@dataclass(frozen=True)
class Poisson(ArrivalProcess):
    """A homogeneous Poisson process of `rate` requests/s: independent exponential gaps of
    mean 1/rate s, drawn from numpy's default Generator (PCG64) seeded with `seed`; the first
    request one gap after the start. The same seed gives the same offsets."""

    rate: float
    seed: int
    kind = "poisson"

    def _offsets(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed)
        t = 0.0  # s
        while True:
            for gap in rng.exponential(1.0 / self.rate, _CHUNK):
                t += gap
                yield round(t * NS)

    def max_rate(self) -> float:
        return self.rate

    def describe(self) -> dict[str, Any]:
        return {"kind": "poisson", "spec": f"poisson:{_num(self.rate)}", "loop": "open",
                "rate_rps": self.rate, "seed": self.seed, "rng": "numpy PCG64"}


@dataclass(frozen=True)
class Burst(ArrivalProcess):
    """`size` requests at once every `every_s` s: offsets k * every_s for k = 0, 1, ...,
    each `size` times (a request's index in its burst is its index mod `size`)."""

    size: int
    every_s: float
    kind = "burst"

    def __post_init__(self) -> None:
        object.__setattr__(self, "burst", self.size)

    def _offsets(self) -> Iterator[int]:
        k = 0
        while True:
            off = round(k * self.every_s * NS)
            for _ in range(self.size):
                yield off
            k += 1

    def max_rate(self) -> float:
        return self.size / self.every_s

    def describe(self) -> dict[str, Any]:
        return {"kind": "burst", "spec": f"burst:{self.size}@{_num(self.every_s)}s",
                "loop": "open", "size": self.size, "every_s": self.every_s,
                "mean_rate_rps": self.max_rate()}


@dataclass(frozen=True)
class Ramp(ArrivalProcess):
    """A rate linear in time from `start` to `end` requests/s over `ramp_s` s, then the end.

    The intensity is r(t) = start + a t with a = (end - start) / ramp_s, so the expected
    number of arrivals by t is L(t) = start t + a t^2 / 2, whose inverse is
    L^-1(s) = 2 s / (start + sqrt(start^2 + 2 a s)) (the stable form of the quadratic root,
    also right for a = 0 and for start = 0).

    Deterministic (`poisson` False, spec rate:R1..R2/Ds): the k-th request at L^-1(k),
    k = 0, 1, ..., i.e. exactly one request per unit of L: the local gap is 1/r(t).
    Poisson (`poisson` True, spec poisson:R1..R2/Ds): a non-homogeneous Poisson process by
    time-rescaling (inversion of the cumulative intensity): if s_1 < s_2 < ... is a Poisson
    process of rate 1 (cumulative sums of Exp(1) draws, numpy PCG64 seeded with `seed`), then
    L^-1(s_1) < L^-1(s_2) < ... is a Poisson process of intensity r(t) (Cinlar,
    "Introduction to Stochastic Processes", 1975, ch. 4; the time-rescaling theorem, Brown
    et al., Neural Computation 14, 2002). It is exact, uses one draw per arrival, unlike
    thinning (Lewis & Shedler, Naval Research Logistics Quarterly 26(3), 1979), which
    rejects a fraction of draws.
    """

    start: float
    end: float
    ramp_s: float
    poisson: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "duration_s", self.ramp_s)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "poisson-ramp" if self.poisson else "rate-ramp"

    def _inverse_s(self, s: float) -> float:
        """L^-1(s) in s: when the expected count of arrivals reaches s."""
        if s <= 0:
            return 0.0
        a = (self.end - self.start) / self.ramp_s
        root = self.start * self.start + 2.0 * a * s
        if root < 0:  # beyond L(ramp_s) on a falling ramp to 0: never reached
            return math.inf
        return 2.0 * s / (self.start + math.sqrt(root))

    def rate_at(self, t_s: float) -> float:
        """The intensity r(t), requests/s, t in s from the start."""
        return self.start + (self.end - self.start) * t_s / self.ramp_s

    def _units(self) -> Iterator[float]:
        if not self.poisson:
            k = 0
            while True:
                yield float(k)
                k += 1
        rng = np.random.default_rng(self.seed)
        s = 0.0
        while True:
            for gap in rng.exponential(1.0, _CHUNK):
                s += gap
                yield s

    def _offsets(self) -> Iterator[int]:
        for s in self._units():
            t = self._inverse_s(s)
            if t >= self.ramp_s:
                return
            yield round(t * NS)

    def max_rate(self) -> float:
        return max(self.start, self.end)

    def describe(self) -> dict[str, Any]:
        name = "poisson" if self.poisson else "rate"
        out: dict[str, Any] = {
            "kind": self.kind, "loop": "open",
            "spec": f"{name}:{_num(self.start)}..{_num(self.end)}/{_num(self.ramp_s)}s",
            "start_rps": self.start, "end_rps": self.end, "duration_s": self.ramp_s,
            "expected_requests": (self.start + self.end) / 2 * self.ramp_s}
        if self.poisson:
            out.update(seed=self.seed, rng="numpy PCG64", method="time-rescaling")
        return out


def sequential() -> Closed:
    """Today's campaigns: one request at a time."""
    return Closed(1)


def new_seed() -> int:
    """A fresh seed for a Poisson process (63 bits: exact in every JSON reader's int64)."""
    return secrets.randbits(63)


_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_RAMP = re.compile(rf"{_NUM}\.\.{_NUM}/{_NUM}s?")
_BURST = re.compile(rf"(\d+)@{_NUM}s?")


def parse(spec: str, *, seed: int | None = None) -> ArrivalProcess:
    """The process of an `--arrival` spec (see the module's docstring).

    `seed` seeds Poisson processes (None: a fresh one, see `new_seed()`; `describe()` records
    it). Raises VimprofError naming what is wrong, with examples.
    """
    text = spec.strip().lower()
    kind, _, arg = text.partition(":")

    def bad(what: str) -> VimprofError:
        return VimprofError(f"--arrival {spec!r}: {what} (e.g. {EXAMPLES})")

    if kind == "sequential":
        if arg:
            raise bad("sequential takes no argument")
        return Closed(1)
    if kind == "closed":
        if not arg.isdigit() or int(arg) < 1:
            raise bad("closed:C needs C, the number of concurrent clients, an integer >= 1")
        return Closed(int(arg))
    if kind in ("rate", "poisson"):
        if not arg:
            raise bad(f"{kind} needs a rate in requests/s, as {kind}:20 or {kind}:1..20/60s")
        ramp = _RAMP.fullmatch(arg)
        if ramp:
            start, end, dur = (float(g) for g in ramp.groups())
            if dur <= 0:
                raise bad("the ramp's duration must be > 0 s")
            if start == 0 and end == 0:
                raise bad("a ramp from 0 to 0 requests/s sends nothing")
            return Ramp(start, end, dur, poisson=kind == "poisson",
                        seed=(new_seed() if seed is None else seed) if kind == "poisson"
                        else None)
        if ".." in arg:
            raise bad(f"a ramp is {kind}:R1..R2/Ds: start and end rates in requests/s, "
                      "duration in s")
        if not re.fullmatch(_NUM, arg):
            raise bad(f"{arg!r} is not a rate in requests/s (a number > 0)")
        rate = float(arg)
        if rate <= 0:
            raise bad("the rate must be > 0 requests/s")
        if kind == "rate":
            return Constant(rate)
        return Poisson(rate, new_seed() if seed is None else seed)
    if kind == "burst":
        m = _BURST.fullmatch(arg)
        if not m:
            raise bad("burst:N@T needs N requests (an integer >= 1) every T s, as burst:10@5s")
        size, every = int(m.group(1)), float(m.group(2))
        if size < 1:
            raise bad("a burst needs N >= 1 requests")
        if every <= 0:
            raise bad("the burst period T must be > 0 s")
        return Burst(size, every)
    raise bad(f"unknown arrival process {kind!r}")


def _num(x: float) -> str:
    """A number as a spec writes it: 20, 0.5."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))
