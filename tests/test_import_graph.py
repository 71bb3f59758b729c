"""The import graph of the vimprof package: no cycle anywhere, and the analyzer's stages
import only down the stream.

The graph is read from the source with `ast` (nothing is imported): every `import` and
`from ... import` of a module, absolute or relative, also those inside functions (a lazy
import still makes a cycle: it only hides it until the function runs). Imports under
`if TYPE_CHECKING:` are left out (they never run). `from vimprof.x import y` is an edge to
vimprof.x.y when that is a module, else to vimprof.x. Importing a module also runs its
parent packages' __init__, but those implicit edges are not counted: a package that
re-exports its submodules would otherwise be a "cycle" with each of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "vimprof"

# The analyzer's stages, down the stream: a module may import modules of its own stage or
# of earlier ones, never of a later one. An entry names a module or a package (then also
# its submodules; vimprof.analyzer itself: only its __init__). Every module of
# vimprof.analyzer must be in a stage.
A = "vimprof.analyzer"
STAGES: list[tuple[str, list[str]]] = [
    ("sources", [f"{A}.sources"]),  # capture files -> TCP segments (Packet) in time order
    ("tcp", [f"{A}.tcp"]),  # segments -> byte streams per connection
    ("decoders", [f"{A}.decoders"]),  # byte streams -> HTTP / Nomad RPC / AMQP messages
    ("builders", [f"{A}.builders"]),  # messages -> per-instance events, phases, timelines
    ("enrich", [f"{A}.enrich"]),  # + hooks, VIM events, requests; cross-checks
    ("sink", [f"{A}.sink"]),  # timelines -> timelines.jsonl; the AnalysisResult
    ("entry", [f"{A}.pipeline"]),  # composes the stages: analyze_run, analyze_capture, ...
    ("live", [f"{A}.follow"]),  # live mode on top of the pipeline
    ("tools", [f"{A}.scrub"]),  # beside the pipeline: credentials out of a capture
    ("package", [A]),  # vimprof.analyzer's __init__: the public names
]


def module_files() -> dict[str, Path]:
    """Module name -> source file, for every module of the package."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of `tree`, at any depth, except under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                walk(child)
            return
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` stands for: itself, else its nearest enclosing module."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its body)."""
    modules = module_files()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base_parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    if node.level > 1:
                        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in modules else base)
            for t in targets:
                if t == PACKAGE or t.startswith(PACKAGE + "."):
                    r = _resolve(t, modules)
                    if r is not None and r != mod:
                        graph[mod].add(r)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component with a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan (the graph is small: recursion is fine)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)

    cycles = []
    for comp in comps:
        members = set(comp)
        start = comp[0]
        # shortest path start -> ... -> start inside the component (breadth first)
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        while v != start:
            path.append(v)
            v = prev[v]
        path.append(start)
        path.reverse()
        cycles.append(path)
    return cycles


def stage_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching entry, stage index)
    for i, (_name, entries) in enumerate(STAGES):
        for e in entries:
            inside = module.startswith(e + ".") and e != A  # (the package's own entry: itself)
            if (module == e or inside) and (best is None or len(e) > best[0]):
                best = (len(e), i)
    return None if best is None else best[1]


def test_graph_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The parser itself: imports inside functions count, TYPE_CHECKING ones do not."""
    src = ("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
           "    from vimprof.a import hidden\n"
           "def f():\n    from . import b\n    from .b import thing\n    import vimprof.c.d\n")
    names = []
    for node in _imports(ast.parse(src)):
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else [
            f"{'.' * node.level}{node.module or ''}:{a.name}" for a in node.names]
    assert names == ["os", "typing:TYPE_CHECKING", ".:b", ".b:thing", "vimprof.c.d"]
    graph = import_graph()
    assert "vimprof.analyzer" in graph and graph["vimprof.cli"], "the graph reads the package"


def test_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in vimprof (lazy imports included):\n" + "\n".join(
        "  " + " -> ".join(c) for c in cycles)


def test_every_analyzer_module_has_a_stage() -> None:
    missing = [m for m in import_graph()
               if (m == A or m.startswith(A + ".")) and stage_of(m) is None]
    assert not missing, f"analyzer modules in no stage (add them to STAGES): {missing}"


def test_analyzer_imports_point_down_the_stream() -> None:
    graph = import_graph()
    wrong = []
    for mod, deps in sorted(graph.items()):
        if not (mod == A or mod.startswith(A + ".")):
            continue
        s = stage_of(mod)
        for d in sorted(deps):
            if d == A or d.startswith(A + "."):
                t = stage_of(d)
                if s is not None and t is not None and t > s:
                    wrong.append(f"{mod} ({STAGES[s][0]}) imports {d} ({STAGES[t][0]})")
    assert not wrong, "analyzer imports against the stream:\n  " + "\n  ".join(wrong)


# Labs and drivers meet only here (docs/architecture.md, "Rooms"): a lab installs the driver kit
# it runs, and a driver's floor probe runs the guest the way the lab does.
LAB_TO_DRIVERS = {"vimprof.drivers.nova.install"}
DRIVERS_TO_LAB = {"vimprof.lab.accel", "vimprof.lab.xen"}


def test_labs_and_drivers_meet_only_through_the_named_interface() -> None:
    graph = import_graph()
    crossings = set()
    for mod, deps in graph.items():
        for dep in deps:
            lab_up = mod.startswith("vimprof.lab.") and dep.startswith("vimprof.drivers")
            drivers_up = mod.startswith("vimprof.drivers") and dep.startswith("vimprof.lab")
            if (lab_up and dep not in LAB_TO_DRIVERS) or (drivers_up and dep not in DRIVERS_TO_LAB):
                crossings.add((mod, dep))
    assert not crossings, sorted(crossings)


def test_only_campaigns_and_the_cli_reach_up_into_campaigns() -> None:
    """Pushers, labs, drivers, the analyzer and the reports never import a campaign."""
    graph = import_graph()
    up = sorted((m, d) for m, deps in graph.items() for d in deps
                if d.startswith("vimprof.campaigns")
                and not m.startswith(("vimprof.campaigns", "vimprof.cli")))
    assert not up, up
