"""Imports inside `edlm` point down a declared layer order and form no cycle (module-level and function-level
imports alike: a function-level import hides a loop, it does not remove it). argparse only in the CLI layer."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "edlm"

# The layers, from the bottom (a module belongs to the longest prefix listed; it may import its own layer or
# below, never above, lazily or not):
#   0 (a) errors, utilities, validation
#   1 (b) configs (every dataclass config, no training code), presets, models, diffusion math, data
#   2 (c) energies
#   3 (d) samplers, training, evaluation: they take models, energies and data, never paths to run folders
#   4 (e) run folders: run.json (RunMeta), checkpoint folders, loading a run's model, convert
#   5 (f) the application layer: the Python API (opens runs, builds energies from specs, wires the rest)
#   6 (g) the CLI, demo and bench
LAYERS = {
    "edlm.errors": 0, "edlm.utils": 0, "edlm.validate": 0, "edlm.safe_load": 0, "edlm.safe_io": 0,
    "edlm.config": 1, "edlm.presets": 1, "edlm.models": 1, "edlm.diffusion": 1, "edlm.data": 1,
    "edlm.energy": 2,
    "edlm.sampling": 3, "edlm.training": 3, "edlm.eval": 3,
    "edlm.runs": 4,
    "edlm.api": 5, "edlm.plots": 5,
    "edlm.cli": 6, "edlm.commands": 6, "edlm.__main__": 6, "edlm.demo": 6, "edlm.bench": 6,
    "edlm": 0,  # the package __init__ (exactly): it imports nothing at import time (the API lazily)
}

# No exceptions: an upward import is a design error to fix, not to list.
ARGPARSE_OK = ("edlm.cli", "edlm.commands")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(mod: str) -> int:
    if mod == "edlm":
        return LAYERS["edlm"]
    best = max((p for p in LAYERS if p != "edlm" and (mod == p or mod.startswith(p + "."))), key=len, default=None)
    assert best is not None, f"{mod} has no layer: add it to LAYERS"
    return LAYERS[best]


def imports_of(text: str, me: str, is_package: bool = False) -> set[str]:
    """edlm modules (and 'argparse') that source `text` of module `me` imports anywhere in it."""
    pkg = me if is_package else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # `from edlm.data import corpora` depends on the module edlm.data.corpora; a name that is not a
            # module (`from edlm.data import prepare`) on the package itself
            out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
    return {n for n in out if n == "argparse" or (n in MODULES and n != me)}


MODULES = {module_name(p) for p in SRC.rglob("*.py")}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p.read_text(), module_name(p), p.name == "__init__.py")
            for p in SRC.rglob("*.py")}


def test_every_module_has_a_layer():
    for m in MODULES:
        layer(m)


def test_no_upward_imports():
    bad = []
    for me, deps in graph().items():
        for d in deps - {"argparse"}:
            if layer(d) > layer(me):
                bad.append(f"{me} (layer {layer(me)}) imports {d} (layer {layer(d)})")
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each is an import cycle."""
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in list(g):
        if v not in index:
            visit(v)
    return sccs


def test_no_import_cycles():
    bad = cycles({k: v - {"argparse"} for k, v in graph().items()})
    assert not bad, f"import cycles: {bad}"


def test_argparse_only_in_the_cli():
    bad = [m for m, deps in graph().items() if "argparse" in deps and not m.startswith(ARGPARSE_OK)]
    assert not bad, f"argparse outside cli/commands: {bad}"


def test_the_checker_sees_violations():
    """Relative and function-level imports are resolved, so the tests above can fail."""
    text = "from .schedules import get_schedule\n\ndef f():\n    from edlm.training import loop\n    import argparse\n"
    found = imports_of(text, "edlm.diffusion.masking")
    assert found == {"edlm.diffusion.schedules", "edlm.training.loop", "argparse"}
    assert layer("edlm.training.loop") > layer("edlm.diffusion.masking")
    assert layer("edlm.api.generate") > layer("edlm.sampling.loop") > layer("edlm.energy.ar")
    assert layer("edlm.runs.load") > layer("edlm.training.loop") > layer("edlm.config.train")
    # a loop through a function-level import is a cycle; a chain is not
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []
