"""The sampling wing's structure, read from the source: no import circle through it (imports inside
functions and at the bottom of a file count), one registry of backend names that nothing below imports
back, and no private name imported from another package."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "refscore"
#: the modules this file keeps in order: the samplers, their noise and their compiled floor
WING = ("refscore.sampling", "refscore.noise", "refscore._kernels")


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted):
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path):
    """``[(module imported, names imported from it)]`` of a source file, every import statement
    (module level, inside functions, at the bottom), relative imports resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, ()) for alias in node.names if alias.name.startswith("refscore")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not source.startswith("refscore"):
                continue
            for alias in node.names:  # "from . import reference" imports the module refscore.sampling.reference
                sub = f"{source}.{alias.name}"
                out.append((sub, ()) if _is_module(sub) else (source, (alias.name,)))
    return out


def _graph():
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        graph[_module_name(path)] = {m for m, _ in _imports(path) if m != _module_name(path)}
    return graph


def _cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _in_wing(module):
    return any(module == w or module.startswith(w + ".") for w in WING)


def test_the_graph_reader_sees_a_circle():
    # the reader must find what the rule forbids: the registry circle the sampling wing once had
    graph = {"refscore.sampling.backends": {"refscore.sampling.dask_backend"},
             "refscore.sampling.dask_backend": {"refscore.sampling.backends"}}
    assert _cycles(graph) == [["refscore.sampling.backends", "refscore.sampling.dask_backend"]]
    edges = dict(_imports(PACKAGE / "sampling" / "backends.py"))
    assert "refscore.sampling.reference" in edges and "refscore._kernels" in edges  # function-level import seen


def test_no_import_circle_runs_through_the_sampling_wing():
    circles = [c for c in _cycles(_graph()) if any(_in_wing(m) for m in c)]
    assert circles == []


def test_the_backend_registry_is_imported_by_nothing_it_lists():
    importers = sorted(m for m, deps in _graph().items() if "refscore.sampling.registry" in deps)
    assert [m for m in importers if m.startswith("refscore.sampling.") or m.startswith("refscore._kernels")] == []
    assert "refscore.sampling" in importers  # the samplers read it


def test_the_wing_imports_no_private_name_of_another_package():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        if "__pycache__" in path.parts or not _in_wing(name):
            continue
        top = ".".join(name.split(".")[:2])  # refscore.sampling, refscore.noise, refscore._kernels
        for source, names in _imports(path):
            if source.startswith(top):
                continue
            offenders += [f"{name}: {source}.{n}" for n in names if n.startswith("_")]
    assert offenders == []
