"""Sphinx extension for refscore's site: everything that could drift is read from the code.

* API pages. At ``builder-inited`` one page per public module of ``refscore``
  (no path component starting with ``_``) is written to ``docs/api/``: a summary
  table of the module's ``__all__`` (or, without ``__all__``, the public names it
  defines) and the autodoc entries of the names whose home is that module.  A
  name exported by several modules is documented once, in the shallowest public
  module below the root that exports it (``refscore.models.MLPScore``, not
  ``refscore.models.mlp.MLPScore``); the others link to it.
* Directives, used from the pages (inside ``{eval-rst}`` blocks of MyST pages):

  ``readme-commands``     the two commands of README.md lines 1-2;
  ``conventions-ledger``  ``refscore.conventions.TABLE`` as a table whose
                          conversion functions link to the API;
  ``report-rows``         rows of ``validation/REPORT.md`` for one experiment,
                          optionally those whose quantity matches a regex;
  ``validation-gallery``  every ``figures/*.png`` with its experiment's title,
                          module docstring and REPORT rows;
  ``test-source``         the source of one test function, with a label
                          ``test-<file stem>-<function>`` to link to.

  Each fails the build (an error, not a silent gap) when what it reads is gone:
  a figure without a REPORT section is shown as such, but a test that was
  renamed, or a regex that matches no REPORT row, stops the build.
* Links. In ``docs/derivations.md`` every numbered section gets the label
  ``derivations-<N>`` / ``derivations-<N.M>``; a docstring's
  "docs/derivations.md §N.M" becomes a link to it; and in the hand-written
  pages every literal ``refscore.a.b`` names a documented object and links to it
  (so a stale name in the derivations fails the build under ``nitpicky``).
"""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import pathlib
import pkgutil
import re
from dataclasses import dataclass

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.errors import ExtensionError
from sphinx.transforms import SphinxTransform
from sphinx.util.nodes import nested_parse_with_titles

DOCS = pathlib.Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
API_DIR = "api"
PACKAGE = "refscore"


# ---------------------------------------------------------------- the API pages
def _is_public_module(name: str) -> bool:
    return not any(part.startswith("_") for part in name.split(".")[1:])


def public_modules(mock_imports=()) -> list[str]:
    """Dotted names of refscore's public modules, the package first, in walk order."""
    from sphinx.ext.autodoc.mock import mock

    pkg = importlib.import_module(PACKAGE)
    names = [PACKAGE]
    with mock(list(mock_imports)):
        for info in pkgutil.walk_packages(pkg.__path__, PACKAGE + "."):
            if _is_public_module(info.name):
                importlib.import_module(info.name)
                names.append(info.name)
    return names


def _defined_names(module) -> list[str]:
    """Public names a module without ``__all__`` defines: its own functions and classes,
    and the top-level names its source assigns that are not functions, classes or modules."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return []
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if not isinstance(t, ast.Name) or not hasattr(module, t.id):
                    continue
                obj = getattr(module, t.id)
                if _kind(obj) == "data" or getattr(obj, "__module__", None) == module.__name__:
                    out.append(t.id)
    return [n for n in dict.fromkeys(out) if not n.startswith("_")]


def public_names(module) -> list[str]:
    """The names a module makes public: ``__all__``, else the public names it defines."""
    names = getattr(module, "__all__", None)
    return list(names) if names is not None else _defined_names(module)


@dataclass
class Entry:
    name: str
    obj: object
    kind: str  # "module", "class", "exception", "function", "data"
    home: str  # dotted module where it is documented


def _kind(obj) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if inspect.isroutine(obj) or type(obj).__name__ in ("CPUDispatcher", "Dispatcher"):
        return "function"
    return "data"


def api_entries(mock_imports=()) -> dict[str, list[Entry]]:
    """Per public module, its public names with their kind and documented home."""
    from sphinx.ext.autodoc.mock import mock

    mods = public_modules(mock_imports)
    with mock(list(mock_imports)):
        loaded = {m: importlib.import_module(m) for m in mods}
    listed = {m: public_names(loaded[m]) for m in mods}
    out = {}
    for m in mods:
        entries = []
        for name in listed[m]:
            obj = getattr(loaded[m], name)
            kind = _kind(obj)
            if kind == "module":
                entries.append(Entry(name, obj, kind, obj.__name__))
                continue
            # every public module (below the root) that exports this very object
            homes = [h for h in mods if h != PACKAGE and name in listed[h]
                     and getattr(loaded[h], name, None) is obj]
            home = min(homes, key=lambda h: (h.count("."), mods.index(h))) if homes else m
            entries.append(Entry(name, obj, kind, home))
        out[m] = entries
    return out


def api_aliases(entries: dict[str, list[Entry]]) -> dict[str, str]:
    """``{other path: documented path}`` for every name documented elsewhere, including the
    module that defines it (``refscore.models.mlp.MLPScore`` -> ``refscore.models.MLPScore``)."""
    aliases = {}
    for m, ents in entries.items():
        for e in ents:
            if e.kind == "module":
                continue
            home = f"{e.home}.{e.name}"
            if e.home != m:
                aliases[f"{m}.{e.name}"] = home
            origin = getattr(e.obj, "__module__", None)
            qual = getattr(e.obj, "__qualname__", None)
            if e.kind != "data" and origin and qual and f"{origin}.{qual}" != home:
                aliases[f"{origin}.{qual}"] = home
    return aliases


_ALIASES: dict[str, str] = {}


def resolve_alias(app, env, node, contnode):
    """Resolve a reference to a name's other paths (its defining module, a re-export)."""
    if node.get("refdomain") != "py" or not _ALIASES:
        return None
    target = node["reftarget"].lstrip("~.")
    candidates = [target]
    mod = node.get("py:module") or ""
    while mod:  # relative to the current module, then to each enclosing package
        candidates.append(f"{mod}.{target}")
        mod = mod.rpartition(".")[0]
    domain = env.get_domain("py")
    for cand in candidates:
        parts = cand.split(".")
        for i in range(len(parts), 1, -1):
            home = _ALIASES.get(".".join(parts[:i]))
            if home:
                new = ".".join([home] + parts[i:])
                return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                           new, node, contnode)
    # A name that exists in refscore but is not public (not in any __all__): shown as
    # code, without a link.  A name that does not exist at all still fails the build.
    for cand in candidates:
        if cand.startswith(PACKAGE + ".") and _exists(cand):
            return contnode
    return None


def _exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        modname = ".".join(parts[:i])
        try:
            obj = importlib.import_module(modname)
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def _underline(title: str, char: str = "=") -> list[str]:
    return [title, char * len(title), ""]


def _relative(target: str, modname: str) -> str:
    """autosummary wants names below the current module written relative to it."""
    return target[len(modname) + 1:] if target.startswith(modname + ".") else target


def _has_doc_comment(modname: str, name: str) -> bool:
    from sphinx.pycode import ModuleAnalyzer

    try:
        return ("", name) in ModuleAnalyzer.for_module(modname).find_attr_docs()
    except Exception:  # noqa: BLE001 - no source: no comment
        return False


_NOT_INHERITED = ("object, int, float, str, tuple, dict, list, Enum, IntEnum, "
                  "BaseException, Exception, Warning, UserWarning, RuntimeWarning")


def _module_page(modname: str, entries: list[Entry]) -> list[str]:
    lines = _underline(modname) + [f".. automodule:: {modname}", ""]
    if not entries:
        return lines
    lines += [".. rubric:: Summary", "", ".. autosummary::", "   :nosignatures:", ""]
    for e in entries:
        target = e.home if e.kind == "module" else f"{e.home}.{e.name}"
        lines.append(f"   ~{_relative(target, modname)}")
    lines.append("")
    here = [e for e in entries if e.kind != "module" and e.home == modname]
    elsewhere = [e for e in entries if e.kind != "module" and e.home != modname]
    if elsewhere:
        lines += [".. rubric:: Documented in another module", ""]
        for e in elsewhere:
            role = {"class": "class", "exception": "exc", "function": "func"}.get(e.kind, "data")
            lines.append(f"* ``{e.name}``: :py:{role}:`{e.home}.{e.name}`")
        lines.append("")
    if here:
        lines += [".. rubric:: Reference", ""]
    for e in here:
        full = f"{modname}.{e.name}"
        if e.kind in ("class", "exception"):
            directive = "autoexception" if e.kind == "exception" else "autoclass"
            lines += [f".. {directive}:: {full}", "   :members:", "   :show-inheritance:",
                      f"   :inherited-members: {_NOT_INHERITED}", ""]
        elif e.kind == "function":
            lines += [f".. autofunction:: {full}", ""]
        elif _has_doc_comment(modname, e.name):
            lines += [f".. autodata:: {full}", "   :no-value:", ""]
        else:  # no ``#:`` comment: autodoc would show the docstring of the value's type
            lines += [f".. py:data:: {e.name}"]  # the current module is set by automodule
            tname = type(e.obj).__name__
            if not tname.startswith("_"):
                lines.append(f"   :type: {tname}")
            lines.append("")
    return lines


def _write_if_changed(path: pathlib.Path, text: str) -> None:
    """Write atomically, and only when the text changed (keeps incremental builds fast)."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_api_pages(app) -> None:
    entries = api_entries(app.config.autodoc_mock_imports)
    _ALIASES.clear()
    _ALIASES.update(api_aliases(entries))
    out = pathlib.Path(app.srcdir) / API_DIR
    out.mkdir(exist_ok=True)
    index = _underline("API reference") + [
        "Generated from the docstrings at build time: one page per public module of",
        "``refscore`` (every name in its ``__all__``).  A name exported by several modules",
        "is documented once, in the shallowest module below ``refscore`` that exports it;",
        "the other pages link there.  Docstrings cite the derivations as",
        ":ref:`docs/derivations.md §N <derivations>`, linked here.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ]
    keep = {"index.rst"}
    for modname, ents in entries.items():
        fname = f"{modname}.rst"
        keep.add(fname)
        _write_if_changed(out / fname, "\n".join(_module_page(modname, ents)) + "\n")
        index.append(f"   {modname}")
    _write_if_changed(out / "index.rst", "\n".join(index) + "\n")
    for stale in out.glob("*.rst"):
        if stale.name not in keep:
            stale.unlink()


# abbreviations the docstrings use that end a "sentence" too early ("eq. (2)")
_ABBREVIATIONS = (" eq.", "(eq.", "Eq.", " eqs.", "Eqs.", "Fig.", "Thm.", " cf.", " vs.", " resp.",
                  " Sec.", " ex.", " approx.")


def _parse_rst(lines, settings):
    from docutils.parsers.rst.states import RSTStateMachine, state_classes
    from docutils.utils import new_document
    from sphinx.util.docutils import NullReporter

    node = new_document("", settings)
    node.reporter = NullReporter()
    RSTStateMachine(state_classes, "Body").run(lines, node)
    return node


def _fixed_extract_summary(doc, settings):
    """``autosummary.extract_summary`` with the first-sentence search fixed.

    Sphinx 9.0 re-parses the whole first paragraph instead of each candidate
    sentence, so a summary cut at a period inside ``literal`` text (``0 .. n``)
    is kept and breaks the page; this checks each candidate itself.
    """
    from sphinx.ext import autosummary as asm

    settings = getattr(settings, "settings", settings)  # Sphinx < 9 passes the document
    first = []
    for line in doc:
        if not line or line.isspace():
            if first:
                break
            continue
        first.append(line)
    if not first:
        return ""
    node = _parse_rst(first, settings)
    if isinstance(node[0], nodes.section):
        summary = node[0].astext().strip()
    elif not isinstance(node[0], nodes.paragraph):
        summary = first[0].strip()
    else:
        sentences = asm.periods_re.split(" ".join(first))
        summary = sentences[0].strip() if len(sentences) == 1 else ""
        for i in range(len(sentences) if len(sentences) > 1 else 0):
            summary = ". ".join(sentences[: i + 1]).rstrip(".") + "."
            if summary.endswith(asm.WELL_KNOWN_ABBREVIATIONS + _ABBREVIATIONS):
                continue
            if not any(_parse_rst([summary], settings).findall(nodes.system_message)):
                break
    return asm.literal_re.sub(".", summary)


# ------------------------------------------------------------------- helpers
def _para(*children) -> nodes.paragraph:
    p = nodes.paragraph()
    p += list(children)
    return p


def _xref(target: str, text: str, reftype: str = "obj", literal: bool = True):
    ref = addnodes.pending_xref("", refdomain="py", reftype=reftype, reftarget=target,
                                refexplicit=True, refwarn=True)
    ref += nodes.literal(text, text) if literal else nodes.Text(text)
    return ref


def _table(header: list[str], rows: list[list], widths=None) -> nodes.table:
    """A docutils table; each cell is a string or a list of inline nodes."""
    table = nodes.table(classes=["refscore-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for w in widths or [1] * len(header):
        group += nodes.colspec(colwidth=w)

    def row(cells):
        r = nodes.row()
        for c in cells:
            entry = nodes.entry()
            entry += _para(*(c if isinstance(c, list) else [nodes.Text(str(c))]))
            r += entry
        return r

    head = nodes.thead()
    head += row(header)
    body = nodes.tbody()
    for cells in rows:
        body += row(cells)
    group += [head, body]
    return table


# ---------------------------------------------------------- README commands
class ReadmeCommands(Directive):
    """The commands of README.md lines 1-2 (``Label: `command```), as shell blocks."""

    has_content = False

    def run(self):
        lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:2]
        out = []
        for line in lines:
            m = re.fullmatch(r"\s*([^:`]+):\s*`([^`]+)`\s*", line)
            if not m:
                raise self.error(f"README.md line {lines.index(line) + 1} is not 'Label: `command`': {line!r}")
            label, cmd = m.groups()
            out.append(_para(nodes.strong(label, label), nodes.Text(":")))
            block = nodes.literal_block(cmd, cmd, language="bash")
            out.append(block)
        return out


# --------------------------------------------------------- conventions ledger
class ConventionsLedger(Directive):
    """``refscore.conventions.TABLE``, rendered at build time."""

    has_content = False

    def _cell(self, text: str, names: set[str]) -> list:
        out = []
        for i, part in enumerate(re.split(r"`([^`]*)`", text)):
            if i % 2 == 0:
                if part:
                    out.append(nodes.Text(part))
                continue
            name = re.match(r"[A-Za-z_]\w*", part)
            if name and name.group(0) in names:
                out.append(_xref(f"refscore.conventions.{name.group(0)}", part, "func"))
            else:
                out.append(nodes.literal(part, part))
        return out

    def run(self):
        from refscore import conventions

        names = set(conventions.__all__)
        header = ["quantity", "refscore convention", "common variant", "conversion"]
        rows = [[self._cell(c, names) for c in row.cells] for row in conventions.TABLE]
        return [_table(header, rows, [2, 3, 3, 4])]


# ---------------------------------------------------------------- the REPORT
REPORT_COLUMNS = ["experiment", "quantity", "measured", "expected", "source", "tolerance", "result"]


def report_rows(path: pathlib.Path | None = None) -> list[dict]:
    """The claim rows of ``validation/REPORT.md`` (the first table), as dicts."""
    path = path or ROOT / "validation" / "REPORT.md"
    rows, in_table = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if s.startswith("| experiment | quantity |"):
            in_table = True
            continue
        if not in_table:
            continue
        if not s.startswith("|"):
            if rows:
                break
            continue
        if re.fullmatch(r"\|[-| ]+\|", s):
            continue
        # cells may hold bare '|' (e.g. '|grad ISM|'); columns are separated by ' | '
        cells = [c.strip() for c in s[1:-1].strip().split(" | ")]
        if len(cells) != len(REPORT_COLUMNS):
            raise ExtensionError(f"{path}: cannot split this row into {len(REPORT_COLUMNS)} "
                                 f"columns: {line!r}")
        rows.append(dict(zip(REPORT_COLUMNS, cells)))
    if not rows:
        raise ExtensionError(f"{path}: no report table found")
    return rows


def _report_table(rows: list[dict], with_experiment: bool = False) -> nodes.table:
    cols = REPORT_COLUMNS if with_experiment else REPORT_COLUMNS[1:]
    widths = {"experiment": 2, "quantity": 6, "measured": 2, "expected": 2, "source": 4,
              "tolerance": 2, "result": 1}
    return _table(cols, [[r[c] for c in cols] for r in rows], [widths[c] for c in cols])


class ReportRows(Directive):
    """Rows of validation/REPORT.md: ``.. report-rows:: EXPERIMENT`` [``:match: REGEX``]."""

    required_arguments = 1
    option_spec = {"match": directives.unchanged}

    def run(self):
        exp = self.arguments[0]
        rows = [r for r in report_rows() if r["experiment"] == exp]
        if "match" in self.options:
            rx = re.compile(self.options["match"])
            rows = [r for r in rows if rx.search(r["quantity"])]
        if not rows:
            raise self.error(f"validation/REPORT.md has no row for experiment {exp!r}"
                             + (f" matching {self.options['match']!r}" if "match" in self.options else ""))
        return [_report_table(rows)]


# ------------------------------------------------------------ validation gallery
class ValidationGallery(Directive):
    """Every ``figures/*.png`` with its experiment's title, docstring and REPORT rows."""

    has_content = False

    def run(self):
        env = self.state.document.settings.env
        rows = report_rows()
        report_names = list(dict.fromkeys(r["experiment"] for r in rows))
        figures = sorted((ROOT / "figures").glob("*.png"))
        if not figures:
            raise self.error("no figures/*.png found")
        # the REPORT's order first, then the figures no experiment produces
        order = {n: i for i, n in enumerate(report_names)}
        figures.sort(key=lambda p: (order.get(p.stem, len(order)), p.stem))
        missing = [n for n in report_names if not (ROOT / "figures" / f"{n}.png").exists()]
        if missing:
            raise self.error(f"REPORT.md experiments without figures/<name>.png: {missing}")
        srcdir = pathlib.Path(env.srcdir)
        text = []
        for fig in figures:
            name = fig.stem
            rel = "/" + os.path.relpath(fig, srcdir).replace(os.sep, "/")
            try:
                mod = importlib.import_module(f"refscore.validation.{name}")
                title = f"{name}: {mod.TITLE}"
            except ImportError:
                mod, title = None, name
            text += [f".. _gallery-{name}:", ""] + _underline(title, "-") + [
                     f".. image:: {rel}", f"   :alt: {name}", "   :width: 100%", ""]
            if mod is not None:
                text += [f"Made by :py:mod:`refscore.validation.{name}` "
                         f"(``python -m validation --only {name}``).", "",
                         f".. automodule:: refscore.validation.{name}", "   :no-index:", ""]
            if name in report_names:
                text += [f".. report-rows:: {name}", ""]
            elif name == "bench":
                text += ["Made by ``refscore bench`` (no validation rows): see :doc:`performance`.", ""]
            else:
                text += ["This figure has no rows in ``validation/REPORT.md``.", ""]
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(text, source="validation-gallery"), container)
        return container.children


# --------------------------------------------------------------- test sources
def test_label(spec: str) -> str:
    path, _, func = spec.partition("::")
    return f"test-{pathlib.Path(path).stem}-{func}".lower().replace("_", "-")


class TestSource(Directive):
    """``.. test-source:: tests/test_x.py::test_name``: the test's source, labelled."""

    required_arguments = 1
    has_content = False

    def run(self):
        spec = self.arguments[0]
        path, _, func = spec.partition("::")
        file = ROOT / path
        if not file.is_file() or not func:
            raise self.error(f"test-source: {spec!r} does not name tests/<file>.py::<function>")
        src = file.read_text(encoding="utf-8")
        tree = ast.parse(src)
        found = [n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == func]
        if not found:
            raise self.error(f"test-source: {path} has no function {func!r} (renamed?)")
        node = found[0]
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        lines = src.splitlines()[start - 1:node.end_lineno]
        code = "\n".join(lines)
        label = test_label(spec)
        rubric = nodes.rubric(spec, "")
        rubric += nodes.literal(spec, spec)
        rubric["ids"].append(label)
        rubric["names"].append(label)
        self.state.document.note_explicit_target(rubric)
        block = nodes.literal_block(code, code, language="python")
        block["linenos"] = True
        block["highlight_args"] = {"linenostart": start}
        env = self.state.document.settings.env
        env.note_dependency(str(file))
        return [rubric, block]


# -------------------------------------------------------------- transforms
_SECTION = re.compile(r"(\d+(?:\.\d+)?)\.?\s")


class DerivationLabels(SphinxTransform):
    """Label each numbered section of derivations.md ``derivations-N`` / ``derivations-N.M``."""

    default_priority = 200

    def apply(self, **kwargs):
        if self.env.docname != "derivations":
            return
        doc = self.document
        for section in doc.findall(nodes.section):
            m = _SECTION.match(section[0].astext())
            if not m:
                continue
            name = f"derivations-{m.group(1)}"
            if doc.nametypes.get(name):
                continue
            section["names"].append(name)
            doc.nameids[name] = section["ids"][0]
            doc.nametypes[name] = True
        # the document itself: "derivations"
        top = next(iter(doc.findall(nodes.section)), None)
        if top is not None and not doc.nametypes.get("derivations"):
            if "derivations" not in top["names"]:
                top["names"].append("derivations")
            doc.nameids["derivations"] = top["ids"][0]
            doc.nametypes["derivations"] = True


_DOTTED = re.compile(r"(refscore(?:\.[A-Za-z]\w*)+)(\(.*\))?")


class LinkDottedNames(SphinxTransform):
    """In hand-written pages, a literal ``refscore.a.b`` (or ``refscore.a.b(...)``) links to the API."""

    default_priority = 210

    def apply(self, **kwargs):
        if self.env.docname.startswith(API_DIR + "/"):
            return
        for lit in list(self.document.findall(nodes.literal)):
            if isinstance(lit.parent, (addnodes.pending_xref, nodes.reference)) or \
                    isinstance(lit, nodes.literal_block):
                continue
            m = _DOTTED.fullmatch(lit.astext())
            if not m:
                continue
            ref = addnodes.pending_xref("", refdomain="py", reftype="obj", reftarget=m.group(1),
                                        refexplicit=True, refwarn=True)
            lit.replace_self(ref)
            ref += lit


_DERIV_CITE = re.compile(r"(?<![`/\w])docs/derivations\.md §(\d+(?:\.\d+)?)")


def link_derivation_citations(app, what, name, obj, options, lines):
    """'docs/derivations.md §N.M' in a docstring becomes a link to that section."""
    for i, line in enumerate(lines):
        if "docs/derivations.md §" in line:
            lines[i] = _DERIV_CITE.sub(r":ref:`docs/derivations.md §\1 <derivations-\1>`", line)


def setup(app):
    from sphinx.ext import autosummary

    autosummary.extract_summary = _fixed_extract_summary
    app.connect("builder-inited", write_api_pages)
    app.connect("missing-reference", resolve_alias)
    app.connect("autodoc-process-docstring", link_derivation_citations, priority=400)
    app.add_directive("readme-commands", ReadmeCommands)
    app.add_directive("conventions-ledger", ConventionsLedger)
    app.add_directive("report-rows", ReportRows)
    app.add_directive("validation-gallery", ValidationGallery)
    app.add_directive("test-source", TestSource)
    app.add_transform(DerivationLabels)
    app.add_transform(LinkDottedNames)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
