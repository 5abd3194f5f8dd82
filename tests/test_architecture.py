"""The package's shape: stages as folders, imports only pointing down, no cycle, a thin CLI."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_import_points_to_a_lower_stage_and_none_forms_a_cycle():
    graph = _graph_module()
    edges = graph.edges()
    assert len(edges) > 200  # the parser sees the package's imports (function-level ones included)
    assert graph.violations(edges) == []
    assert graph.cycles(edges) == []


def test_the_checker_catches_an_upward_import_and_a_cycle():
    graph = _graph_module()
    fake = ROOT / "harness" / "task.py"
    upward = [("harness.task", "harness.probing.engine", fake, 1)]
    assert graph.violations(upward) and "imports harness.probing.engine" in graph.violations(upward)[0]
    sideways = [("harness.training.hubert", "harness.analysis.measures", fake, 1)]
    assert graph.violations(sideways)
    loop = [("harness.a", "harness.b", fake, 1), ("harness.b", "harness.a", fake, 2)]
    assert graph.cycles(loop) == [["harness.a", "harness.b"]]


def test_every_module_belongs_to_a_known_stage_folder():
    graph = _graph_module()
    folders = {graph.folder_of(m) for m in graph.module_files()}
    assert folders <= set(graph.STAGES)
    subpackages = {p.name for p in (ROOT / "harness").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert subpackages <= set(graph.STAGES), subpackages - set(graph.STAGES)


def test_the_cli_modules_stay_small():
    for path in (ROOT / "harness" / "cli").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 300, path.name


def test_every_public_function_class_and_method_has_a_docstring():
    """scripts/undocumented.py: a method overriding a documented one of a project base class
    implements that contract and counts as documented."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "undocumented.py")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout


def test_every_harness_import_of_the_bench_and_scripts_resolves():
    """bench/ and scripts/ are not imported by the suite; a name that moved in the package
    (harness.cli.embedded_corpus_dir did) would only fail when someone runs them."""
    import ast
    import importlib

    bad = []
    for path in sorted((ROOT / "bench").rglob("*.py")) + sorted((ROOT / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            bad.append(f"{path.relative_to(ROOT)}: {node.module}.{alias.name}")
    assert not bad, bad


def test_finding_finished_runs_imports_neither_lightning_nor_torch_where_not_needed():
    """A second `bash scripts/main.sh` must take seconds: Lightning (about 5 s to import) is only
    imported once a run really trains, and a finished corpus build imports no torch at all."""
    code = ("import sys; import harness.reports.suite, harness.probing.benchmark, harness.probing.engine; "
            "print('pytorch_lightning' in sys.modules, 'lightning_fabric' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    code = "import sys; import harness.corpus.build, harness.corpus.manifest; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
