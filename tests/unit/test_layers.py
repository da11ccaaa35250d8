"""The package's layers (docs/ARCHITECTURE.md): which imports each may make, and no import cycles.

Every ``import dancelcm.X`` / ``from dancelcm.X import ...`` in a module counts, also inside functions: a lazy
import is still a dependency."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "dancelcm"

# layer -> the layers it may import (itself always). A module's layer is its subpackage, or its own name at the top.
ALLOWED = {
    "cli": set(),
    "diffusion": set(),
    "distill": {"diffusion"},
    "data": {"cli"},
    "models": {"cli", "diffusion"},
    "metrics": {"cli", "data"},
    "plotting": set(),
    "media": {"data"},
    "sampling": {"cli", "diffusion", "distill", "models"},
    "evaluation": {"cli", "data", "diffusion", "distill", "metrics", "models", "sampling", "media", "plotting"},
    "callbacks": {"cli", "data", "media", "metrics", "models"},
    "lit": {"cli", "data", "diffusion", "distill", "models", "sampling"},
    # entry points
    "evaluate": {"cli", "evaluation", "metrics", "models", "sampling"},
    "report": {"cli", "evaluation"},
    "animate": {"cli", "data", "media", "models", "sampling"},
    "train": {"cli", "callbacks", "lit"},
    "precompute": {"cli", "data", "models"},
    # tools: bench and wan_step measure training steps too (the LightningModules, the distillation maths); probe,
    # feature_net and half are inference
    "tools": {"cli", "data", "diffusion", "distill", "lit", "metrics", "models", "sampling"},
    "demo": {"cli", "evaluation", "media", "metrics", "models"},
}
INFERENCE = ("evaluate", "report", "animate", "probe", "sampling", "evaluation", "media")


@functools.cache
def _modules() -> dict[str, set[str]]:
    """module name -> the dancelcm modules it imports."""
    out = {}
    for path in PKG.rglob("*.py"):
        name = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dancelcm"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("dancelcm")}
        out[name] = deps - {name}
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "dancelcm"


def test_every_import_respects_the_layers():
    bad = []
    for module, deps in _modules().items():
        layer = _layer(module)
        if layer == "dancelcm":
            continue
        assert layer in ALLOWED, f"{module}: its layer {layer!r} is not in ALLOWED (and docs/ARCHITECTURE.md)"
        for dep in deps:
            if _layer(dep) not in ALLOWED[layer] | {layer}:
                bad.append(f"{module} imports {dep}")
    assert not bad, "\n".join(sorted(bad))


def test_inference_code_needs_no_training_layer():
    for module, deps in _modules().items():
        if _layer(module) in INFERENCE:
            assert not {_layer(d) for d in deps} & {"lit", "callbacks"}, (module, deps)


def test_no_import_cycles():
    modules = _modules()
    graph = {m: {d for d in deps if d in modules} for m, deps in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(d) :], d]))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
