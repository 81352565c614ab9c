"""The layering of shared/DESIGN.md, checked on the code itself.

Layers, lowest first; a module imports from its own layer and lower ones only:

    moderation_portal.core  the shared kernel (audit, append-only facts, access, leases, ...)
    detection
    llm_verify
    reviews
    active_learning
    moderation_portal       wiring (settings, urls, asgi, celery, health, middleware): anything

Every import statement in a module counts, wherever it stands: at module level, inside a
function, under ``if TYPE_CHECKING``. The same reading of the code finds import cycles and
private names imported across modules (as ``shared/hooks/cycles.py`` does).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("moderation_portal", "detection", "llm_verify", "reviews", "active_learning")
# Lowest first. A module belongs to the first entry that is it or one of its packages.
LAYERS = (
    "moderation_portal.core",
    "detection",
    "llm_verify",
    "reviews",
    "active_learning",
    "moderation_portal",
)
HEAVY = {
    "torch",
    "torchvision",
    "open_clip",
    "timm",
    "pytorch_grad_cam",
    "transformers",
    "sentence_transformers",
    "modAL",
    "faiss",
    "tritonclient",
}
# The Django-free edge packages, the only ones that may import a heavy library.
EDGE = ("detection.ml", "llm_verify", "active_learning.ml")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the first-party module imported (the nearest one the statement names)
    name: str | None  # for `from target import name` where name is not a module
    line: int

    def where(self) -> str:
        return f"{module_path(self.source)}:{self.line}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """First-party modules (migrations left out: generated, and they name apps by label)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts or "__pycache__" in path.parts:
                continue
            found[_module_name(path)] = path
    return found


def module_path(name: str) -> str:
    return str(modules()[name].relative_to(ROOT))


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_of(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if in_package(module, layer))


@cache
def _tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(), filename=module_path(name))


def _first_party(dotted: str) -> str | None:
    known = modules()
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


@cache
def first_party_imports(name: str) -> tuple[Import, ...]:
    """Every import of a first-party module by `name`, wherever the statement stands."""
    known = modules()
    is_package = known[name].name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(_tree(name)):
        targets: list[tuple[str, str | None]] = []
        if isinstance(node, ast.Import):
            targets = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.append((full, None) if full in known else (base, alias.name))
        for dotted, imported in targets:
            target = _first_party(dotted)
            if target is not None and target != name:
                found.append(Import(name, target, imported, node.lineno))
    return tuple(found)


@cache
def top_level_imports(name: str) -> frozenset[str]:
    """The top-level names of the absolute imports in `name` (third-party ones included)."""
    names = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.partition(".")[0])
    return frozenset(names)


def report(title: str, problems: list[str]) -> str:
    return f"{title} ({len(problems)}):\n  " + "\n  ".join(problems)


# --- layers ----------------------------------------------------------------------------------


def test_modules_import_only_their_own_and_lower_layers():
    problems = []
    for name in modules():
        level = layer_of(name)
        for imp in first_party_imports(name):
            if layer_of(imp.target) > level:
                problems.append(
                    f"{imp.where()}: {name} ({LAYERS[level]}) imports {imp.target} "
                    f"({LAYERS[layer_of(imp.target)]}, a higher layer)"
                )
    assert not problems, report(
        "Imports of a higher layer (lowest first: " + " < ".join(LAYERS) + ")", problems
    )


def test_every_module_has_a_layer():
    # The layer list stays exhaustive: a new top-level package has to be placed in it.
    problems = [name for name in modules() if not any(in_package(name, p) for p in LAYERS)]
    assert not problems, report("Modules in no layer", problems)


# --- cycles and private names ----------------------------------------------------------------


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _one_cycle(start: str, members: set[str], edges: dict[tuple[str, str], Import]) -> list[Import]:
    """The shortest cycle through `start` inside one strongly connected component."""
    came_from: dict[str, Import] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for (source, target), imp in sorted(edges.items()):
            if source != node or target not in members:
                continue
            if target == start:
                path = [imp]
                while path[0].source != start:
                    path.insert(0, came_from[path[0].source])
                return path
            if target not in came_from:
                came_from[target] = imp
                queue.append(target)
    raise AssertionError(f"no cycle through {start}")


def test_no_import_cycles():
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    edges: dict[tuple[str, str], Import] = {}
    for name in modules():
        for imp in first_party_imports(name):
            graph[name].add(imp.target)
            edges.setdefault((name, imp.target), imp)
    problems = []
    for component in _strongly_connected(graph):
        cycle = _one_cycle(component[0], set(component), edges)
        steps = ", ".join(f"{imp.source} -> {imp.target} ({imp.where()})" for imp in cycle)
        problems.append(f"{len(component)} modules ({', '.join(component)}); e.g. {steps}")
    assert not problems, report("Import cycles among first-party modules", problems)


def test_no_private_names_imported_across_modules():
    problems = [
        f"{imp.where()}: {imp.source} imports {imp.target}.{imp.name}"
        for name in modules()
        for imp in first_party_imports(name)
        if imp.name and imp.name.startswith("_") and not imp.name.startswith("__")
    ]
    assert not problems, report("Private names imported from another module", problems)


# --- heavy libraries -------------------------------------------------------------------------


def _path_to_django(start: str) -> list[str] | None:
    """`start`, the first-party modules it imports on the way, and the one that imports
    Django, when there is such a chain."""
    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if "django" in top_level_imports(node):
            chain = [node]
            while (previous := came_from[chain[0]]) is not None:
                chain.insert(0, previous)
            return chain
        for imp in first_party_imports(node):
            if imp.target not in came_from:
                came_from[imp.target] = node
                queue.append(imp.target)
    return None


def test_heavy_libraries_only_in_django_free_edge_modules():
    problems = []
    for name in modules():
        heavy = sorted(top_level_imports(name) & HEAVY)
        if not heavy:
            continue
        if not any(in_package(name, edge) for edge in EDGE):
            problems.append(
                f"{module_path(name)} imports {heavy} outside the edge packages {list(EDGE)}"
            )
        chain = _path_to_django(name)
        if chain is not None:
            problems.append(
                f"{module_path(name)} imports {heavy} and Django "
                f"({' -> '.join([*chain, 'django'])})"
            )
    assert not problems, report("Heavy libraries beside Django", problems)


def test_the_web_process_starts_without_torch():
    code = (
        "import os, sys;"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'moderation_portal.settings');"
        "import django; django.setup();"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "import moderation_portal.asgi;"
        f"heavy = sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules); print(heavy); "
        "sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, (
        "the web process loaded heavy libraries: " + result.stdout + result.stderr
    )
