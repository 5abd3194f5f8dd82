"""List public functions, methods and classes without a docstring (methods overriding a
documented base-class method inherit its contract and are not listed)."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


#: class name -> (base class names, {method name: has a docstring}) over every scanned file, so
#: that a method overriding a documented method of a base class defined in the project counts
#: as documented (it implements that contract)
CLASSES: dict[str, tuple[list[str], dict[str, bool]]] = {}


def _index(paths):
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                methods = {n.name: bool(ast.get_docstring(n)) for n in node.body
                           if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
                CLASSES[node.name] = (bases, methods)


def _documented_in_bases(cls_name, name, seen=()):
    bases, _ = CLASSES.get(cls_name, ([], {}))
    for base in bases:
        if base in seen:
            continue
        _, methods = CLASSES.get(base, ([], {}))
        if methods.get(name) or _documented_in_bases(base, name, seen + (base,)):
            return True
    return False


def undocumented(paths):
    """(file, line, name) of each public definition without a docstring."""
    _index(files())
    out = []
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in tree.body:
            out += _check(path, node, None)
    return out


def _check(path, node, cls):
    found = []
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        name = node.name
        public = not name.startswith("_")
        overriding = cls is not None and bool(cls.bases) and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
            and not any(isinstance(d, ast.Name) and d.id in ("property",) for d in node.decorator_list) \
            and _overrides(cls, name)
        if public and not ast.get_docstring(node) and not overriding:
            found.append((path.relative_to(ROOT), node.lineno, f"{cls.name}.{name}" if cls else name))
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                found += _check(path, sub, node)
    return found


#: method names every task, head, upstream, Lightning module or callback defines from its base
INHERITED = {"examples", "prepare", "build_head", "loss", "predict", "score", "batch_targets", "load", "layers",
             "fetch", "attentions", "forward", "output_lengths", "training_step", "validation_step",
             "configure_optimizers", "on_train_start", "on_train_batch_end", "on_train_end", "on_validation_end",
             "on_validation_epoch_start", "on_validation_epoch_end", "on_before_optimizer_step", "state_dict",
             "load_state_dict", "get_extra_state", "set_extra_state", "num_classes", "setup", "__len__", "__getitem__",
             "__iter__"}


def _overrides(cls, name):
    return name in INHERITED or _documented_in_bases(cls.name, name)


def files():
    return [p for base in ("harness", "tasks", "upstreams") for p in sorted((ROOT / base).rglob("*.py"))]


if __name__ == "__main__":
    rows = undocumented([Path(a).resolve() for a in sys.argv[1:]] or files())
    for f, line, name in rows:
        print(f"{f}:{line}: {name}")
    print(f"{len(rows)} undocumented", file=sys.stderr)
