"""Campaign files: a sweep of campaigns described in YAML (docs/campaign-files.md).

A campaign file names a VIM, a target (the embedded lab or a user's cluster/cloud), driver
variants, an arrival process or a list of levels to sweep, runs or a duration, warm-up, seed
and what to do when the VIM starts failing. `load(path)` reads one, validates it against
vimprof/schemas/campaign.schema.json (JSON Schema draft 2020-12, every object closed: an
unknown key is an error) and returns a typed `CampaignFile`. Every error is one VimprofError
naming the file, the line and the key: "campaign.yaml:12: unknown key 'rat' in levels[1]
(known: arrival, duration_s, ...)", "campaign.yaml:7: runs must be an integer, not 'ten'".

Line numbers come from PyYAML's node tree (yaml.compose): each mapping key and value keeps
its start mark, and a schema error's path is looked up in that map.

`from_dict(data, source)` is the same for a campaign built from `vimprof sweep`'s flags; its
`text` is the YAML dump, so each run directory gets a campaign.yaml either way.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from vimprof.campaigns import arrivals
from vimprof.errors import VimprofError

VERSIONS = (1,)  # campaign file versions this vimprof reads
SCHEMA = "campaign.schema.json"
DEFAULTS = {"runs": 10, "warmup": 0, "max_in_flight": 16, "on_failure": "continue",
            "failure_threshold": 0.5, "analyze": True, "poll_ms": 50.0}
DEFAULT_TIMEOUT_S = {"nomad": 60.0, "nova": 120.0}
NOMAD_VARIANT_KEYS = ("driver", "nomad", "backend", "memory_mb", "floor")
NOVA_VARIANT_KEYS = ("nova_driver",)
NOMAD_CLUSTER_KEYS = ("nomad_addr", "kernel", "job", "job_group", "token_env", "ca_cert",
                      "client_cert", "client_key", "tls_server_name", "http_ports", "rpc_ports")
NOVA_CLOUD_KEYS = ("os_cloud", "image", "flavor")
_TYPES = {"integer": "an integer", "number": "a number", "string": "a string",
          "boolean": "true or false", "object": "a mapping", "array": "a list",
          "null": "empty"}

Path_ = tuple[Any, ...]  # a place in the document: keys and list indices


@dataclass(frozen=True)
class Level:
    """One level of the sweep: an arrival process and its bounds."""

    index: int
    arrival: str
    runs: int
    duration_s: float | None
    max_in_flight: int
    seed: int | None
    label: str  # what the terminal and sweep.json call it: the given label, else the spec
    line: int | None = None


@dataclass(frozen=True)
class Variant:
    """A named set of driver options; `options` holds only the keys the file gave."""

    name: str
    options: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


@dataclass(frozen=True)
class CampaignFile:
    """A validated campaign file."""

    version: int
    name: str
    vim: str
    target: dict[str, Any]  # as in the file; "lab" present (a dict) for the embedded lab
    variants: tuple[Variant, ...]
    levels: tuple[Level, ...]
    runs: int
    warmup: int
    seed: int | None
    timeout_s: float
    poll_ms: float
    on_failure: str
    failure_threshold: float
    analyze: bool
    source: str  # the file's name, or "flags"
    text: str  # the file's text (copied into each run directory as campaign.yaml)
    base_dir: Path = field(default=Path("."))  # relative paths (a jobspec) resolve here

    @property
    def lab(self) -> bool:
        return "lab" in self.target

    def dir_name(self, variant: Variant, level: Level) -> str:
        """The run directory of one (variant, level) under the sweep's directory."""
        return f"{variant.name}-{level.index:02d}"

    def plan(self) -> list[tuple[Variant, Level]]:
        """Every campaign of the sweep, in the order it runs: variants, then levels."""
        return [(v, lv) for v in self.variants for lv in self.levels]


def load(path: Path | str) -> CampaignFile:
    """Read and validate a campaign file. Raises VimprofError naming the line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VimprofError(f"cannot read campaign file {path}: {exc.strerror}") from None
    return parse_text(text, path.name, path.parent)


def parse_text(text: str, source: str, base_dir: Path = Path(".")) -> CampaignFile:
    """A campaign file's text -> CampaignFile (`source` names it in errors)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise VimprofError(f"{where}: not valid YAML: {problem}") from None
    lines: dict[Path_, int] = {}
    key_lines: dict[Path_, int] = {}
    if node is not None and source != "flags":  # flags have no lines
        _walk(node, (), lines, key_lines, source)
    return _build(data, source, text, base_dir, lines, key_lines)


def from_dict(data: dict[str, Any], source: str = "flags",
              base_dir: Path = Path(".")) -> CampaignFile:
    """A campaign built in code (`vimprof sweep`'s flags): the same checks as a file; its
    text is the YAML dump."""
    text = yaml.safe_dump(data, sort_keys=False)
    return parse_text(f"# built by vimprof sweep from its flags\n{text}", source, base_dir)


def _walk(node: yaml.Node, at: Path_, lines: dict[Path_, int], key_lines: dict[Path_, int],
          source: str) -> None:
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            if key in seen:
                raise VimprofError(f"{source}:{k.start_mark.line + 1}: key {key!r} appears "
                                   f"twice{_in(at)}")
            seen.add(key)
            key_lines[at + (key,)] = k.start_mark.line + 1
            _walk(v, at + (key,), lines, key_lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, at + (i,), lines, key_lines, source)


def _name(at: Path_) -> str:
    """levels[2].arrival"""
    out = ""
    for p in at:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "the file"


def _in(at: Path_) -> str:
    return f" in {_name(at)}" if at else ""


class _Errors:
    def __init__(self, source: str, lines: dict[Path_, int], key_lines: dict[Path_, int]):
        self.source, self.lines, self.key_lines = source, lines, key_lines

    def line(self, at: Path_, key: bool = False) -> int | None:
        """The line of `at` (its key's line when `key`), else of its nearest parent."""
        while True:
            found = (self.key_lines if key else self.lines).get(at) or self.lines.get(at)
            if found is not None or not at:
                return found
            at = at[:-1]

    def error(self, at: Path_, message: str, key: bool = True) -> VimprofError:
        line = self.line(at, key)
        where = f"{self.source}:{line}" if line is not None else self.source
        return VimprofError(f"{where}: {message}")


def _schema_message(err, errors: _Errors) -> VimprofError:
    """One jsonschema ValidationError as the file's error: line, key, what is wrong."""
    at = tuple(err.absolute_path)
    v = err.validator
    if v == "additionalProperties" and isinstance(err.instance, dict):
        known = sorted(err.schema.get("properties", {}))
        unknown = [k for k in err.instance if k not in known]
        key = unknown[0] if unknown else "?"
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if key == "token":
            hint = ("; never put a token in the file: set NOMAD_TOKEN (or name another "
                    "variable with token_env)")
        return errors.error(at + (key,), f"unknown key {key!r}{_in(at)} (known: "
                            f"{', '.join(known)}){hint}")
    if v == "type":
        want = err.validator_value
        want = " or ".join(_TYPES.get(w, w) for w in (want if isinstance(want, list) else
                                                       [want]))
        return errors.error(at, f"{_name(at)} must be {want}, not {_short(err.instance)}")
    if v == "enum":
        return errors.error(at, f"{_name(at)} must be one of "
                                f"{', '.join(map(str, err.validator_value))}, not "
                                f"{_short(err.instance)}")
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return errors.error(at, f"{_name(at)} needs the key {missing!r}", key=False)
    if v in ("minimum", "exclusiveMinimum", "maximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<="}[v]
        return errors.error(at, f"{_name(at)} must be {op} {err.validator_value}, not "
                                f"{_short(err.instance)}")
    if v == "pattern":
        return errors.error(at, f"{_name(at)} {_short(err.instance)} must be a plain name "
                                "(letters, digits, '_', '.', '-')")
    if v == "propertyNames":
        return errors.error(at, f"{_name(at)}: a name must be plain (letters, digits, '_', "
                                f"'.', '-'): {err.message}")
    if v in ("minItems", "minProperties"):
        return errors.error(at, f"{_name(at)} must not be empty")
    return errors.error(at, f"{_name(at)}: {err.message}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@cache
def _validator():
    import jsonschema

    from vimprof.schema import schema

    cls = jsonschema.Draft202012Validator
    s = schema(SCHEMA)
    cls.check_schema(s)
    return cls(s)


def _validate(data: Any, errors: _Errors) -> None:
    found = sorted(_validator().iter_errors(data),
                   key=lambda e: (errors.line(tuple(e.absolute_path)) or 0,
                                  -len(tuple(e.absolute_path))))
    if found:
        raise _schema_message(found[0], errors)


def _build(data: Any, source: str, text: str, base_dir: Path, lines: dict[Path_, int],
           key_lines: dict[Path_, int]) -> CampaignFile:
    errors = _Errors(source, lines, key_lines)
    readable = ", ".join(map(str, VERSIONS))
    if not isinstance(data, dict):
        raise VimprofError(f"{source}: a campaign file is a YAML mapping starting with "
                           f"`version: 1` (this vimprof reads version {readable})")
    if "version" not in data:
        raise VimprofError(f"{source}: no `version` key: add `version: 1` (this vimprof reads "
                           f"campaign file version {readable})")
    version = data["version"]
    if isinstance(version, bool) or version not in VERSIONS:
        raise errors.error(("version",), f"version {version!r} is not a campaign file version "
                           f"this vimprof reads (it reads {readable})", key=False)
    _validate(data, errors)

    vim = data["vim"]
    target = _target(data.get("target") or {"lab": None}, vim, errors)
    variants = _variants(data.get("variants"), vim, errors)
    if "arrival" in data and "levels" in data:
        raise errors.error(("levels",), "give `arrival` (one level) or `levels` (a sweep), "
                           "not both")
    runs = data.get("runs", DEFAULTS["runs"])
    seed = data.get("seed")
    duration_s = data.get("duration_s")
    max_in_flight = data.get("max_in_flight", DEFAULTS["max_in_flight"])
    raw_levels = data.get("levels") or [data.get("arrival", "sequential")]
    levels = []
    for i, raw in enumerate(raw_levels):
        at: Path_ = ("levels", i) if "levels" in data else ("arrival",)
        over = raw if isinstance(raw, dict) else {"arrival": raw}
        spec = over["arrival"].strip()
        spec_at = at + ("arrival",) if isinstance(raw, dict) else at
        lv_seed = over.get("seed", seed)
        try:
            process = arrivals.parse(spec, seed=lv_seed)
        except VimprofError as exc:
            msg = str(exc).removeprefix("--arrival ")
            raise errors.error(spec_at, f"{_name(spec_at)}: {msg}", key=False) from None
        if vim == "nova" and spec.lower() != "sequential":
            raise errors.error(spec_at, f"{_name(spec_at)}: Nova campaigns run sequential "
                               f"arrivals only for now, not {spec!r} (open and closed loops "
                               "are Nomad's today)", key=False)
        if process.open and not over.get("runs", runs) and not over.get("duration_s"):
            raise errors.error(spec_at, "an open-loop level needs runs or duration_s")
        label = over.get("label", spec)
        levels.append(Level(index=i, arrival=spec, runs=over.get("runs", runs),
                            duration_s=over.get("duration_s", duration_s),
                            max_in_flight=over.get("max_in_flight", max_in_flight),
                            seed=lv_seed, label=label, line=errors.line(spec_at)))
    labels = [lv.label for lv in levels]
    for i, lb in enumerate(labels):
        if labels.index(lb) != i:
            raise errors.error(("levels", i), f"levels[{i}] repeats level {lb!r}: give each "
                               "a distinct `label`")
    warmup = data.get("warmup", DEFAULTS["warmup"])
    for lv in levels:
        if warmup >= lv.runs:
            raise errors.error(("warmup",), f"warmup {warmup} leaves no measured run of "
                               f"{lv.runs} (level {lv.label})")
    name = data.get("name") or Path(source).stem
    if source == "flags" and not data.get("name"):
        raise VimprofError("a sweep needs a name (--label NAME)")
    return CampaignFile(
        version=version, name=name, vim=vim, target=target, variants=variants,
        levels=tuple(levels), runs=runs, warmup=warmup, seed=seed,
        timeout_s=float(data.get("timeout_s", DEFAULT_TIMEOUT_S[vim])),
        poll_ms=float(data.get("poll_ms", DEFAULTS["poll_ms"])),
        on_failure=data.get("on_failure", DEFAULTS["on_failure"]),
        failure_threshold=float(data.get("failure_threshold", DEFAULTS["failure_threshold"])),
        analyze=data.get("analyze", DEFAULTS["analyze"]), source=source, text=text,
        base_dir=base_dir)


def _target(target: dict[str, Any], vim: str, errors: _Errors) -> dict[str, Any]:
    mine = NOMAD_CLUSTER_KEYS if vim == "nomad" else NOVA_CLOUD_KEYS
    other = NOVA_CLOUD_KEYS if vim == "nomad" else NOMAD_CLUSTER_KEYS
    for key in target:
        if key in other:
            raise errors.error(("target", key), f"target.{key} is not a {vim} setting "
                               f"({vim} targets take: lab, {', '.join(mine)}, accel, "
                               "capture_iface)")
    if "lab" in target:
        extra = [k for k in target if k != "lab"]
        if extra:
            raise errors.error(("target", extra[0]), f"target.{extra[0]}: the lab target "
                               "takes no cluster settings (remove `lab` for your own "
                               f"{'cluster' if vim == 'nomad' else 'cloud'})")
        return {"lab": dict(target["lab"] or {})}
    if vim == "nomad":
        if "nomad_addr" not in target:
            raise errors.error(("target",), "target needs `lab: {}` (the embedded lab) or "
                               "`nomad_addr` (your cluster)", key=True)
        if "kernel" not in target and "job" not in target:
            raise errors.error(("target",), "a cluster target needs `kernel` (the micro-VNF "
                               "kernel on the clients) or `job` (your jobspec)")
    elif "os_cloud" not in target:
        raise errors.error(("target",), "target needs `lab: {}` (the embedded lab) or "
                           "`os_cloud` with `image` and `flavor` (your cloud)")
    return dict(target)


def _variants(raw: dict[str, Any] | None, vim: str, errors: _Errors) -> tuple[Variant, ...]:
    if not raw:
        return (Variant("default", {}),)
    other = NOVA_VARIANT_KEYS if vim == "nomad" else NOMAD_VARIANT_KEYS
    out = []
    for name, opts in raw.items():
        opts = dict(opts or {})
        for key in opts:
            if key in other:
                mine = NOMAD_VARIANT_KEYS if vim == "nomad" else NOVA_VARIANT_KEYS
                raise errors.error(("variants", name, key), f"variants.{name}.{key} is not a "
                                   f"{vim} option ({vim} variants take: {', '.join(mine)})")
        memory = opts.get("memory_mb")
        if memory is not None and opts.get("backend", "qemu") == "qemu" and memory < 128:
            raise errors.error(("variants", name, "memory_mb"), f"variants.{name}.memory_mb "
                               "must be at least 128 for QEMU guests")
        out.append(Variant(str(name), opts))
    return tuple(out)


# -- the plan (`vimprof run --dry-run`) -----------------------------------------------------


@dataclass(frozen=True)
class PlannedLevel:
    variant: str
    level: Level
    instances: int  # at most
    send_s: float | None  # the schedule's length when known (open loop), else None


def plan(cf: CampaignFile) -> list[PlannedLevel]:
    """What the sweep will run: per (variant, level), the instances at most and, for an open
    loop, how long the schedule sends (seeded Poisson: exact; unseeded: one draw)."""
    out = []
    for variant, lv in cf.plan():
        process = arrivals.parse(lv.arrival, seed=lv.seed)
        send_s = None
        instances = lv.runs
        if process.open:
            last, n = None, 0
            for off in process.offsets_ns(lv.runs, lv.duration_s):
                last, n = off, n + 1
            instances = n
            send_s = (last or 0) / arrivals.NS
        out.append(PlannedLevel(variant.name, lv, instances, send_s))
    return out


def describe_plan(cf: CampaignFile) -> list[str]:
    """The dry run's lines: the target, each campaign, totals and an estimate."""
    where = ("the embedded lab" if cf.lab else cf.target.get("nomad_addr")
             or f"cloud {cf.target.get('os_cloud')}")
    lines = [f"campaign file {cf.source} (version {cf.version}): sweep {cf.name!r}, {cf.vim} "
             f"at {where}; {len(cf.variants)} variant(s) x {len(cf.levels)} level(s)"]
    planned = plan(cf)
    total_s = 0.0
    unknown = 0
    for i, p in enumerate(planned, 1):
        opts = ", ".join(f"{k}={v}" for k, v in cf.variants[[v.name for v in cf.variants]
                                                          .index(p.variant)].options.items())
        bound = f", at most {p.level.duration_s:g} s" if p.level.duration_s else ""
        timing = (f", sends for {p.send_s:.1f} s" if p.send_s is not None else
                  f", at most {p.instances * cf.timeout_s:.0f} s (timeout {cf.timeout_s:g} s "
                  "per instance)")
        lines.append(f"  {i}/{len(planned)} {p.variant}-{p.level.index:02d}: {p.level.label} "
                     f"({opts or 'defaults'}), {p.instances} instance(s){bound}{timing}")
        if p.send_s is not None:
            total_s += p.send_s
        else:
            unknown += 1
    total = sum(p.instances for p in planned)
    est = (f"open-loop sending takes {total_s:.0f} s plus the VIM's time to finish"
           if total_s else "")
    if unknown:
        est += ("; " if est else "") + (f"{unknown} sequential/closed level(s) last as long "
                                        "as the VIM takes (the timeouts bound them)")
    lines.append(f"total: {total} instance(s) at most, warm-up {cf.warmup} run(s) per level, "
                 f"seed {cf.seed if cf.seed is not None else 'fresh per level (recorded)'}, "
                 f"on failure: {cf.on_failure}"
                 + (f" above {cf.failure_threshold:.0%} failed" if cf.on_failure == "stop"
                    else ""))
    if est:
        lines.append(f"estimate: {est}")
    if not cf.lab and cf.vim == "nomad":
        env = cf.target.get("token_env", "NOMAD_TOKEN")
        lines.append(f"token: from ${env} ({'set' if os.environ.get(env) else 'not set'})")
    return lines


def token(cf: CampaignFile) -> str | None:
    """A cluster target's ACL token from the environment variable the file names (None:
    NOMAD_TOKEN, read by vimprof.pushers.nomad_access as always). Raises VimprofError when the
    named variable is not set."""
    env = cf.target.get("token_env")
    if not env or env == "NOMAD_TOKEN":
        return None
    value = os.environ.get(env)
    if not value:
        raise VimprofError(f"{cf.source}: target.token_env names ${env}, which is not set")
    return value


def parse_variant_flag(text: str) -> tuple[str, dict[str, Any]]:
    """`--variant NAME:driver=xen-tuned,nomad=tuned` -> (NAME, options); values are read as
    YAML scalars (128 -> int, true -> bool), so they meet the same schema as a file's."""
    name, _, rest = text.partition(":")
    if not name:
        raise VimprofError(f"--variant {text!r}: NAME:key=value,... (e.g. "
                           "tuned:driver=xen-tuned,nomad=tuned)")
    opts: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise VimprofError(f"--variant {text!r}: {part!r} is not key=value")
        opts[key.strip()] = yaml.safe_load(value.strip())
    return name, opts


def from_flags(*, vim: str, label: str, variants: tuple[str, ...] = (),
               levels: str | None = None, arrival: str | None = None,
               target: dict[str, Any] | None = None, **settings: Any) -> CampaignFile:
    """`vimprof sweep`'s flags as a campaign (the same checks and run as a file's).
    `settings`: runs, warmup, seed, duration_s, max_in_flight, timeout_s, poll_ms,
    on_failure, failure_threshold, analyze; None values are left out (the defaults)."""
    data: dict[str, Any] = {"version": 1, "name": label, "vim": vim}
    target = {k: v for k, v in (target or {}).items() if v not in (None, (), [])}
    if not any(k in target for k in ("nomad_addr", "os_cloud")):
        accel = target.pop("accel", None)
        target = {"lab": {"accel": accel} if accel else {}, **target}
    data["target"] = {k: list(v) if isinstance(v, tuple) else v for k, v in target.items()}
    if variants:
        parsed: dict[str, Any] = {}
        for text in variants:
            name, opts = parse_variant_flag(text)
            if name in parsed:
                raise VimprofError(f"--variant {name} is given twice")
            parsed[name] = opts
        data["variants"] = parsed
    if levels:
        data["levels"] = [s.strip() for s in levels.split(",") if s.strip()]
    elif arrival:
        data["arrival"] = arrival
    data.update({k: v for k, v in settings.items() if v is not None})
    return from_dict(data)
