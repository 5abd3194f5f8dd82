"""The package's import graph by stage: a check and a picture.

Each module of ``harness`` (with the plugin folders ``tasks/`` and ``upstreams/``, imported
as ``harness.tasks`` and ``harness.upstreams``) belongs to a stage, the folder it sits in;
the root modules (contracts and schema) are the bottom stage. Every import, including one
inside a function, must point to a lower stage or stay inside its own folder; ``analysis``
and ``training`` sit side by side and never import each other.

    python scripts/import_graph.py              # check, print the folder graph, write docs/imports.png
    python scripts/import_graph.py --check      # check only (exit 1 with the offending imports)

``tests/test_architecture.py`` runs the same check.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: stage of each folder, top (what users call) to bottom (contracts); equal numbers are siblings
STAGES: dict[str, int] = {
    "cli": 8,
    "reports": 7,
    "probing": 6,
    "analysis": 5,
    "training": 5,
    "features": 4,
    "tasks": 3,
    "upstreams": 3,
    "corpus": 2,
    "data": 1,
    "root": 0,
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for harness/ and the two plugin folders."""
    out = {}
    for base, prefix in ((ROOT / "harness", "harness"), (ROOT / "tasks", "harness.tasks"),
                         (ROOT / "upstreams", "harness.upstreams")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


def folder_of(module: str) -> str:
    """The stage folder of a dotted module name (``root`` for ``harness.X`` modules)."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in STAGES:
        return parts[1]
    return "root"


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported harness module, line) for every import statement of a file, resolved to the
    longest known module name (``from harness.x import name`` -> ``harness.x`` or
    ``harness.x.name`` when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t.startswith("harness") and t != module:
                found.append((t, node.lineno))
    return found


def edges() -> list[tuple[str, str, Path, int]]:
    """(importer, imported, file, line) for every harness-internal import."""
    files = module_files()
    known = set(files)
    return [(m, t, path, line) for m, path in sorted(files.items()) for t, line in imports_of(m, path, known)]


def violations(all_edges: list[tuple[str, str, Path, int]]) -> list[str]:
    """Imports that point upward or sideways between stages."""
    bad = []
    for src, dst, path, line in all_edges:
        a, b = folder_of(src), folder_of(dst)
        if a == b or dst == "harness":  # the package itself: its version string
            continue
        if STAGES[b] >= STAGES[a]:
            bad.append(f"{path.relative_to(ROOT)}:{line}: {src} ({a}) imports {dst} ({b})")
    return bad


def cycles(all_edges: list[tuple[str, str, Path, int]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for src, dst, _, _ in all_edges:
        graph.setdefault(src, set()).add(dst)
        graph.setdefault(dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def folder_graph(all_edges: list[tuple[str, str, Path, int]]) -> Counter:
    """(importer folder, imported folder) -> number of module-level import edges."""
    pairs = {(src, dst) for src, dst, _, _ in all_edges}
    return Counter((folder_of(s), folder_of(d)) for s, d in pairs if folder_of(s) != folder_of(d) and d != "harness")


def draw(counts: Counter, path: Path) -> Path:
    """Folders as boxes in rows by stage (top: the CLI), arrows for imports with their counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[int, list[str]] = {}
    for name, stage in STAGES.items():
        rows.setdefault(stage, []).append(name)
    pos = {}
    for stage, names in rows.items():
        for i, name in enumerate(names):
            pos[name] = ((i + 1) / (len(names) + 1), stage)
    fig, ax = plt.subplots(figsize=(8, 9))
    for (a, b), n in sorted(counts.items()):
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                    arrowprops={"arrowstyle": "->", "color": "0.45", "lw": 0.6 + 0.15 * min(n, 10),
                                "connectionstyle": "arc3,rad=0.08"})
    for name, (x, y) in pos.items():
        label = "harness/ (contracts)" if name == "root" else f"{name}/"
        ax.text(x, y, label, ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round,pad=0.4", "fc": "#e8f0fa" if name != "root" else "#fdf1d6", "ec": "0.3"})
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, max(STAGES.values()) + 0.7)
    ax.axis("off")
    ax.set_title("harness: imports between stage folders (arrows point to what is imported; all point down)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; no picture")
    parser.add_argument("--out", default=str(ROOT / "docs" / "imports.png"))
    args = parser.parse_args(argv)
    all_edges = edges()
    bad, loops = violations(all_edges), cycles(all_edges)
    for line in bad:
        print(f"upward import: {line}")
    for group in loops:
        print(f"import cycle: {' -> '.join(group)}")
    if args.check:
        return 1 if bad or loops else 0
    counts = folder_graph(all_edges)
    for (a, b), n in sorted(counts.items(), key=lambda kv: (-STAGES[kv[0][0]], kv[0])):
        print(f"{a:>10} -> {b:<10} {n:3d} module pairs")
    print(f"picture: {draw(counts, Path(args.out))}")
    return 1 if bad or loops else 0


if __name__ == "__main__":
    sys.exit(main())
