"""The package's shape: a public inference layer, no import cycles, no private imports
across modules (issue 15). Read from the source with ``ast``, imports inside functions
included."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pyro_vae"


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path):
    """``(target module, imported names)`` of every import in the file, at any depth."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("pyro_vae"):
                names = [a.name for a in node.names]
                submodules = [f"{target}.{n}" for n in names
                              if (PACKAGE.parent / f"{target}.{n}".replace(".", "/")).with_suffix(
                                  ".py").exists()]
                found.append((target, [n for n in names if f"{target}.{n}" not in submodules]))
                found.extend((s, []) for s in submodules)
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.startswith("pyro_vae"))
    return found


def graph():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        edges[name] = {t for t, _ in imports(path) if t in modules and t != name}
    return modules, edges


def test_the_inference_layer_is_public():
    from pyro_vae.infer import compare, log_likelihood, log_weights  # noqa: F401
    from pyro_vae.infer import OBJECTIVES
    from pyro_vae.infer.objectives import Objective

    assert all(issubclass(cls, Objective) for cls in OBJECTIVES.values())


def test_no_import_cycles():
    modules, edges = graph()
    state, cycle = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycle.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(modules):
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own modules is not a cycle of concepts
    cycle = [c for c in cycle if not all(m.startswith(c[0]) for m in c)]
    assert not cycle, f"import cycles: {cycle}"


def test_no_private_names_cross_modules():
    modules, _ = graph()
    bad = [(name, target, n) for name, path in modules.items()
           for target, names in imports(path) for n in names
           if n.startswith("_") and not n.startswith("__") and target != name]
    assert not bad, f"private names imported across modules: {bad}"


def test_infer_knows_nothing_of_vaes_runs_or_the_cli():
    modules, edges = graph()
    allowed = {"pyro_vae.errors", "pyro_vae.distributed"}
    for name in modules:
        if name.startswith("pyro_vae.infer"):
            outside = {t for t in edges[name] if not t.startswith("pyro_vae.infer")} - allowed
            assert not outside, f"{name} imports {outside}"
