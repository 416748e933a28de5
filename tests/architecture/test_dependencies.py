"""The dependency directions of hpo and models, checked over the source (AST) of every module.

Every import counts: module-level, inside functions, under ``if TYPE_CHECKING``, relative ones,
and the string-named ones a module loads on first use (``lazy_exports``, ``import_module``).
The rules are the table ``RULES`` (read it as the architecture) plus "no cycle between
packages". Each rule is proven live on a small synthetic tree that breaks it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The project's top-level packages; everything else an import names is a third party.
PROJECT = ("hpo", "models")

# -- the architecture -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Modules of ``importers`` (packages; ``*`` is every one) import nothing named by (or
    under) ``forbidden``; ``exempt`` packages or modules are not bound by it."""

    id: str
    says: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()


EVERY = ("*",)
HEAVY = ("torch", "ray", "mlflow")
RAY_PRIVATE = ("ray._private", "ray.core.generated", "ray.experimental.internal_kv",
               "ray.tune.registry", "ray.tune.execution.class_cache")

RULES: tuple[Rule, ...] = (
    Rule("a-pure", "the study file and the search space stay pure: no torch, Ray or MLflow",
         ("hpo.config", "hpo.space"), HEAVY),
    Rule("a-optuna", "Optuna belongs to the search, not to the study file",
         ("hpo.config",), ("optuna",)),
    Rule("b-trial-data", "the trial contract and the data know nothing of the layers above them",
         ("hpo.trial", "hpo.data"),
         ("hpo.execution", "hpo.tracking", "hpo.report", "hpo.study", "hpo.sanity",
          "hpo.config")),
    Rule("c-execution", "Ray's side hands events to a sink: no tracking, reports or study",
         ("hpo.execution",), ("hpo.tracking", "hpo.report", "hpo.study")),
    Rule("d-study", "only the study (and the entry points) wires the others together",
         EVERY, ("hpo.study",), exempt=("hpo.study", "hpo.cli", "hpo")),
    Rule("d-outputs", "tracking and reports read records, never Ray or the study",
         ("hpo.report", "hpo.tracking"), ("hpo.execution", "hpo.study")),
    Rule("e-cli", "the command line is the outermost layer: nothing imports it",
         EVERY, ("hpo.cli",), exempt=("hpo.__main__",)),
    Rule("f-models", "the model factory stands alone: it imports nothing of hpo",
         ("models",), ("hpo",)),
    Rule("h-ray-private", "Ray's private API is touched in one module only",
         EVERY, RAY_PRIVATE, exempt=("hpo.execution._ray_private",)),
)
RULE_IDS = [r.id for r in RULES]
CYCLES = "g-no-cycle"

# -- the checker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import in one module: where it is, what it says, and the dotted names it loads."""

    module: str  # the importing module, e.g. hpo.data.dataset
    path: str  # its file, relative to the scanned root
    line: int
    text: str  # the statement as written (or the call that names a module)
    targets: tuple[str, ...]

    def where(self) -> str:
        return f"{self.path}:{self.line} ({self.module}): `{self.text}`"


@dataclass(frozen=True)
class Violation:
    rule: Rule
    imp: Import
    target: str

    def __str__(self) -> str:
        return f"[{self.rule.id}] {self.imp.where()} imports {self.target}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(name: str) -> str:
    """The concept an internal module belongs to: ``models``, ``hpo`` (its __init__) or
    ``hpo.<folder or module>``."""
    parts = name.split(".")
    return parts[0] if parts[0] != "hpo" else ".".join(parts[:2])


def is_project(name: str) -> bool:
    return name.split(".")[0] in PROJECT


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _module_strings(call: ast.Call) -> list[str]:
    """Module names a call loads by string: ``import_module("m")``, ``__import__("m")``, and
    the values of a ``lazy_exports(package, {name: "m"})`` table."""
    fn = call.func
    name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
    if name in ("import_module", "__import__") and call.args:
        nodes = [call.args[0]]
    elif name == "lazy_exports" and len(call.args) >= 2:
        table = call.args[1]
        nodes = (table.values if isinstance(table, ast.Dict)
                 else [table.value] if isinstance(table, ast.DictComp) else [])
    else:
        return []
    return [n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def scan(root: Path, packages: Iterable[str] = PROJECT) -> list[Import]:
    """Every import of every module under ``root/<package>`` (subfolders included)."""
    files = sorted(p for pkg in packages for p in (root / pkg).rglob("*.py"))
    known = {module_name(p, root) for p in files}
    found: list[Import] = []
    for path in files:
        module, source = module_name(path, root), path.read_text()
        is_package = path.name == "__init__.py"
        rel = str(path.relative_to(root))
        for node in ast.walk(ast.parse(source, filename=rel)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolved against this module's package
                    base = module.split(".")
                    base = base[:len(base) - node.level + (1 if is_package else 0)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = [origin]
                for alias in node.names:
                    sub = f"{origin}.{alias.name}"
                    # a submodule by name (``from hpo.config import spec``); a third party's
                    # names count too, so that ``from ray.tune import registry`` is seen
                    if sub in known or not is_project(origin):
                        targets.append(sub)
            elif isinstance(node, ast.Call):
                targets = _module_strings(node)
            if targets:
                text = ast.get_source_segment(source, node) or ast.dump(node)
                found.append(Import(module, rel, node.lineno, " ".join(text.split()),
                                    tuple(dict.fromkeys(targets))))
    return found


def binds(rule: Rule, module: str) -> bool:
    package = package_of(module)
    if package in rule.exempt or module in rule.exempt:
        return False
    return rule.importers == EVERY or package in rule.importers


def violations(imports: Iterable[Import], rules: Iterable[Rule] = RULES) -> list[Violation]:
    out = []
    for rule in rules:
        for imp in imports:
            if not binds(rule, imp.module):
                continue
            hit = next((t for t in imp.targets for f in rule.forbidden if under(t, f)), None)
            if hit is not None:
                out.append(Violation(rule, imp, hit))
    return out


def package_graph(imports: Iterable[Import]) -> dict[tuple[str, str], list[Import]]:
    """(importing package, imported package) -> the imports that make that edge."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in imports:
        source = package_of(imp.module)
        for target in {package_of(t) for t in imp.targets if is_project(t)} - {source}:
            edges.setdefault((source, target), []).append(imp)
    return edges


def cycles(imports: Iterable[Import]) -> list[tuple[list[str], list[Import]]]:
    """Each set of packages that import each other in a circle (Tarjan's strongly connected
    components of the package graph), with the imports between its members."""
    edges = package_graph(imports)
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[tuple[list[str], list[Import]]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                inside = set(members)
                found.append((sorted(members), [i for (a, b), imps in sorted(edges.items())
                                                if a in inside and b in inside for i in imps]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe_cycle(members: list[str], imports: list[Import]) -> str:
    lines = [f"import cycle between {', '.join(members)}:"]
    for imp in imports:
        inside = sorted({package_of(t) for t in imp.targets if is_project(t)} & set(members)
                        - {package_of(imp.module)})
        lines.append(f"  {package_of(imp.module)} -> {', '.join(inside)}: {imp.where()}")
    return "\n".join(lines)


# -- the real tree ----------------------------------------------------------------------------

#: Rules the real tree breaks while the restructuring goes on (rule id -> why); each is
#: xfail(strict): it must fail, and fixing the code turns it into an error to remove here.
KNOWN_BROKEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def tree() -> list[Import]:
    return scan(REPO)


def _known(rule_id: str) -> list:
    reason = KNOWN_BROKEN.get(rule_id)
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


@pytest.mark.parametrize("rule", [pytest.param(r, id=r.id, marks=_known(r.id)) for r in RULES])
def test_the_tree_keeps_the_rule(tree, rule):
    broken = violations(tree, [rule])
    assert not broken, f"{rule.says}:\n" + "\n".join(f"  {v}" for v in broken)


@pytest.mark.parametrize("rule", [pytest.param(CYCLES, id=CYCLES, marks=_known(CYCLES))])
def test_no_import_cycle_between_packages(tree, rule):
    found = cycles(tree)
    assert not found, "\n".join(describe_cycle(m, i) for m, i in found)


def test_the_scan_sees_every_module_and_every_kind_of_import(tree):
    """The checks above are only as good as the scan: every file (subfolders too), and the
    imports that hide in functions or behind a name."""
    files = {module_name(p, REPO) for pkg in PROJECT for p in (REPO / pkg).rglob("*.py")}
    assert {i.module for i in tree} == {m for m in files if _has_imports(m)}
    # every package a rule names is there: a rule about a package that moved binds nothing
    named = {p for r in RULES for p in (*r.importers, *r.forbidden, *r.exempt) if is_project(p)}
    assert named <= {package_of(m) for m in files} | files, named - {package_of(m) for m in files}
    private = [i for i in tree if i.module == "hpo.execution._ray_private"]
    # _ray_private imports Ray only inside its functions: the scan finds them
    assert any(under(t, "ray._private") for i in private for t in i.targets)
    assert any("ray.tune.registry" in i.targets for i in private)
    # a package surface's lazy names are imports too
    assert any("hpo.execution.callback" in i.targets for i in tree if i.module == "hpo.execution")


def _has_imports(module: str) -> bool:
    path = REPO / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(
        ast.parse(path.read_text())))


# -- each rule proven live on a synthetic tree that breaks it ---------------------------------

#: rule id -> (files of a small tree that breaks it, the offending module, its line). The other
#: files of a tree keep every rule, so the checker must single out just this one.
BROKEN_TREES: dict[str, tuple[dict[str, str], str, int]] = {
    "a-pure": ({
        "hpo/space/distributions.py": """\
            def sample():
                import torch.nn as nn  # inside a function still counts
                return nn
            """}, "hpo.space.distributions", 2),
    "a-optuna": ({
        "hpo/config/spec.py": "from hpo.space import distributions\nimport optuna\n",
        "hpo/space/distributions.py": "import optuna\n",  # the search may
    }, "hpo.config.spec", 2),
    "b-trial-data": ({
        "hpo/data/dataset.py": """\
            from typing import TYPE_CHECKING

            if TYPE_CHECKING:
                from hpo.config.spec import DataSpec
            """,
        "hpo/config/spec.py": "",
    }, "hpo.data.dataset", 4),
    "c-execution": ({
        "hpo/execution/callback.py": (
            "from hpo.trial import record\n\n\nfrom ..tracking import store\n"),
        "hpo/tracking/store.py": "",
        "hpo/trial/record.py": "",
    }, "hpo.execution.callback", 4),
    "d-study": ({
        "hpo/sanity/checks.py": "from hpo import study\n",
        "hpo/study/__init__.py": "from hpo.study import run\n",  # the study may, and the cli
        "hpo/cli.py": "from hpo.study import run\n",
        "hpo/study/run.py": "",
    }, "hpo.sanity.checks", 1),
    "d-outputs": ({
        "hpo/report/tables.py": "import json\n\nimport hpo.execution.round\n",
        "hpo/execution/round.py": "",
    }, "hpo.report.tables", 3),
    "e-cli": ({
        "hpo/__main__.py": "from hpo.cli import main\n",
        "hpo/cli.py": "",
        "hpo/report/__init__.py": """\
            from hpo._lazy import lazy_exports

            __getattr__ = lazy_exports(__name__, {"main": "hpo.cli"})
            """,
        "hpo/_lazy.py": "",
    }, "hpo.report", 3),
    "f-models": ({
        "models/registry.py": "import math\nfrom hpo import errors\n",
        "hpo/errors.py": "",
    }, "models.registry", 2),
    "h-ray-private": ({
        "hpo/execution/_ray_private.py": (
            "from ray.tune import registry\nimport ray._private.worker\n"),
        "hpo/execution/round.py": """\
            import importlib


            def lookups():
                from ray.tune import Tuner
                return importlib.import_module("ray.experimental.internal_kv"), Tuner
            """,
    }, "hpo.execution.round", 6),
    CYCLES: ({
        "hpo/space/refinement.py": "from hpo.config.spec import REGULARIZATION\n",
        "hpo/config/spec.py": """\
            def problems():
                from hpo.space.distributions import Float
                return Float
            """,
        "hpo/space/distributions.py": "",
    }, "hpo.space.refinement", 1),
}


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            if parent != Path(".") and not (root / parent / "__init__.py").exists():
                (root / parent / "__init__.py").write_text("")
        path.write_text(textwrap.dedent(text))
    return root


def test_every_rule_has_a_tree_that_breaks_it():
    assert set(BROKEN_TREES) == {*RULE_IDS, CYCLES}


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_the_checker_reports_a_broken_rule(tmp_path, rule_id):
    files, module, line = BROKEN_TREES[rule_id]
    imports = scan(write_tree(tmp_path, files))
    found = violations(imports)
    assert found, f"the checker missed a tree that breaks {rule_id}"
    assert {v.rule.id for v in found} == {rule_id}, [str(v) for v in found]
    assert [(v.imp.module, v.imp.line) for v in found] == [(module, line)]
    message = str(found[0])
    assert module in message and f":{line} " in message and "`" in message  # where, and what
    assert not cycles(imports)


def test_the_checker_reports_an_import_cycle_with_its_modules(tmp_path):
    files, module, line = BROKEN_TREES[CYCLES]
    imports = scan(write_tree(tmp_path, files))
    assert not violations(imports)  # nothing else is wrong with this tree
    (members, involved), *others = cycles(imports)
    assert not others
    assert members == ["hpo.config", "hpo.space"]
    assert {(i.module, i.line) for i in involved} == {(module, line), ("hpo.config.spec", 2)}
    message = describe_cycle(members, involved)
    assert "hpo/space/refinement.py:1" in message and "hpo/config/spec.py:2" in message
    assert "from hpo.space.distributions import Float" in message


def test_a_cycle_through_three_packages_is_one_cycle(tmp_path):
    imports = scan(write_tree(tmp_path, {
        "hpo/report/a.py": "from hpo.tracking import b\n",
        "hpo/tracking/b.py": "import hpo.trial.c\n",
        "hpo/trial/c.py": "from ..report import a\n",
        "hpo/errors.py": "",
        "hpo/study/d.py": "from hpo.report import a\nfrom hpo import errors\n",  # not in it
    }))
    found = cycles(imports)
    assert [members for members, _ in found] == [["hpo.report", "hpo.tracking", "hpo.trial"]]
    assert sorted(i.module for i in found[0][1]) == [
        "hpo.report.a", "hpo.tracking.b", "hpo.trial.c"]


# -- what importing the pure layers loads -----------------------------------------------------

PROBE = """\
import json, sys
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "ray", "mlflow"})))
"""


def loaded_heavy(*modules: str, path: Path | None = None) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(path)} if path else None
    done = subprocess.run([sys.executable, "-c", PROBE, *modules], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_pure_layers_and_the_cli_load_no_torch_ray_or_mlflow():
    assert loaded_heavy("hpo.config", "hpo.space", "hpo.cli") == []


def test_the_probe_sees_a_heavy_module_loaded_on_the_way(tmp_path):
    """The probe above can fail: a module that imports (a stand-in for) torch, imported after
    the pure layers, shows torch loaded."""
    write_tree(tmp_path, {"torch/nn.py": "", "uses_torch.py": "import torch.nn\n"})
    assert loaded_heavy("hpo.config", "uses_torch", path=tmp_path) == ["torch", "torch.nn"]
