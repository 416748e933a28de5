"""hpo's uses of Ray's private API still hold in the pinned Ray, and stay in one module.

``hpo/execution/_ray_private.py`` lists what it touches; each entry is looked up in the Ray
that is installed, so an upgrade that moves one fails here by name, not in a study.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hpo.execution import _ray_private
from hpo.execution._ray_private import RUN_METADATA_FIELDS, SYSTEM_CONFIG_KEYS, TOUCHED

REPO = Path(__file__).resolve().parents[2]


def _stub_trial(cls: type) -> Any:
    # A real Tune trial, made by Tune's own constructor; ``stub`` skips looking up a registered
    # trainable, so no Ray is needed. Its run metadata is set per instance, in __init__.
    return cls("hpo-test-trainable", stub=True)


#: Classes whose touched attributes are set per instance: how to make a real one.
INSTANCES = {"ray.tune.experiment.trial.Trial": _stub_trial}


def walk(module: str, dotted: str) -> Any:
    """``module``'s ``dotted`` attribute; raises AttributeError naming the first missing part."""
    obj: Any = importlib.import_module(module)
    path = module
    for part in dotted.split("."):
        if not hasattr(obj, part) and path in INSTANCES:
            obj = INSTANCES[path](obj)
        if not hasattr(obj, part):
            raise AttributeError(f"{path}.{part} is gone from Ray {_ray_version()}")
        obj, path = getattr(obj, part), f"{path}.{part}"
    return obj


def _ray_version() -> str:
    import ray

    return ray.__version__


@pytest.mark.parametrize("module, dotted", TOUCHED, ids=[f"{m}.{a}" for m, a in TOUCHED])
def test_each_touched_attribute_is_still_there(module, dotted):
    walk(module, dotted)  # raises naming the attribute that is gone


def test_the_walk_names_what_is_gone():
    """The test above can fail, and says what failed."""
    with pytest.raises(AttributeError, match=r"ray\.tune\.registry\._no_such_registry"):
        walk("ray.tune.registry", "_no_such_registry")
    with pytest.raises(AttributeError, match=r"Trial\.run_metadata\.no_such_field"):
        walk("ray.tune.experiment.trial", "Trial.run_metadata.no_such_field")


PRIVATE_MODULES = ("ray._private", "ray.core.generated", "ray.experimental.internal_kv",
                   "ray.tune.registry", "ray.tune.execution.class_cache",
                   "ray.tune.execution.tune_controller")


def test_the_touched_list_covers_every_private_module_the_code_imports():
    """TOUCHED is the inventory: each private Ray module _ray_private imports is in it."""
    imported = set()
    for node in ast.walk(ast.parse(Path(_ray_private.__file__).read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {_module_or_parent(node.module, a.name) for a in node.names}
    private = {m for m in imported if any(m == p or m.startswith(p + ".")
                                          for p in PRIVATE_MODULES)}
    assert len(private) >= 5  # worker, grpc_utils, the protobufs, internal_kv, registry, ...
    assert private <= {m for m, _ in TOUCHED}, private - {m for m, _ in TOUCHED}


def _module_or_parent(module: str, name: str) -> str:
    """``module.name`` when that is a module, else ``module``."""
    import importlib.util

    full = f"{module}.{name}"
    try:
        return full if importlib.util.find_spec(full) is not None else module
    except ModuleNotFoundError:
        return module


def test_run_metadata_has_the_fields_hpo_releases():
    from ray.tune.experiment.trial import Trial
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    trial = _stub_trial(Trial)
    assert type(trial.run_metadata) is _TrainingRunMetadata
    missing = [f for f in RUN_METADATA_FIELDS if not hasattr(trial.run_metadata, f)]
    assert not missing, f"Tune's _TrainingRunMetadata lost {missing}"


def test_release_trial_state_keeps_the_last_result_but_not_its_epochs():
    """What the callback does to each finished trial, on a real Tune trial."""
    from ray.tune.experiment.trial import Trial

    trial = _stub_trial(Trial)
    trial.run_metadata.last_result = {"val_accuracy": 0.9, "epoch": 3,
                                      "epochs": [{"epoch": e} for e in (1, 2, 3)]}
    trial.run_metadata.update_metric("val_accuracy", 0.9)
    assert trial.run_metadata.metric_analysis and trial.run_metadata.metric_n_steps
    _ray_private.release_trial_state(trial)
    assert trial.run_metadata.last_result == {"val_accuracy": 0.9, "epoch": 3}
    assert trial.run_metadata.metric_analysis == {} and trial.run_metadata.metric_n_steps == {}


# Ray's system config is declared in C++ (ray_config_def.h) and has no Python list of its
# keys; ``ray._raylet.Config.initialize`` is RayConfig's own parser, the one raylet and GCS run
# on ``ray.init(_system_config=...)``: it aborts the process on a key it does not know, or a
# value of the wrong type.
CONFIG_PROBE = textwrap.dedent("""
    import json, sys
    import ray._raylet

    ray._raylet.Config.initialize(json.dumps(json.loads(sys.argv[1])))
    print("accepted")
""")


def ray_accepts(config: dict[str, Any]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CONFIG_PROBE, json.dumps(config)],
                          capture_output=True, text=True, timeout=120)


def test_ray_knows_the_system_config_hpo_starts_it_with():
    from hpo.execution.cluster import WARM_WORKERS

    assert set(WARM_WORKERS) == set(SYSTEM_CONFIG_KEYS)  # the list is what is used
    done = ray_accepts(WARM_WORKERS)
    assert done.returncode == 0 and "accepted" in done.stdout, done.stderr[-2000:]


def test_ray_refuses_a_system_config_key_it_does_not_know():
    """The check above can fail: an unknown key aborts RayConfig, naming the key."""
    done = ray_accepts({**_ray_private.warm_worker_config(["json"]), "hpo_no_such_key": 1})
    assert done.returncode != 0
    assert "hpo_no_such_key" in done.stderr


# -- nothing else reaches into Ray's internals ------------------------------------------------

#: Names that only _ray_private.py may use: attributes, names or imported modules.
PRIVATE_NAMES = ("_private", "_internal_kv", "_global_registry", "DEFAULT_ENV_VARS",
                 "run_metadata")


#: Calls that reach a module or an attribute by a string.
BY_NAME = ("import_module", "__import__", "getattr", "setattr", "hasattr", "delattr")


def _called(call: ast.Call) -> str:
    fn = call.func
    return fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, name) of each use of a private Ray name in ``source``."""
    uses = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Import):
            names = [p for a in node.names for p in a.name.split(".")] + [
                a.asname for a in node.names if a.asname]
        elif isinstance(node, ast.ImportFrom):
            names = [*(node.module or "").split("."), *(a.name for a in node.names)]
        elif isinstance(node, ast.Call) and _called(node) in BY_NAME:
            # import_module("ray._private.worker"), getattr(trial, "run_metadata"): not docs
            names = [p for a in node.args if isinstance(a, ast.Constant)
                     and isinstance(a.value, str) for p in a.value.split(".")]
        for name in names:
            if any(name == p or name.startswith(p) for p in PRIVATE_NAMES):
                uses.append((node.lineno, name))
    return uses


def test_no_module_but_ray_private_touches_rays_internals():
    offenders = []
    for path in sorted((REPO / "hpo").rglob("*.py")):
        if path.name == "_ray_private.py":
            continue
        offenders += [f"{path.relative_to(REPO)}:{line}: {name}"
                      for line, name in private_uses(path.read_text())]
    assert not offenders, "only hpo/execution/_ray_private.py may touch:\n" + "\n".join(offenders)


@pytest.mark.parametrize("source, name", [
    ("from ray._private import worker\n", "_private"),
    ("import ray._private.worker as w\n", "_private"),
    ("def f(trial):\n    return trial.run_metadata\n", "run_metadata"),
    ("from ray.experimental.internal_kv import _internal_kv_list\n", "_internal_kv_list"),
    ("from ray.tune import registry\nregistry._global_registry.get('a', 'b')\n",
     "_global_registry"),
    ("def f(cc):\n    cc.DEFAULT_ENV_VARS.pop('PL_DISABLE_FORK')\n", "DEFAULT_ENV_VARS"),
    ("import importlib\nimportlib.import_module('ray._private.worker')\n", "_private"),
    ("def f(trial):\n    return getattr(trial, 'run_metadata')\n", "run_metadata"),
])
def test_the_scan_finds_each_kind_of_private_use(source, name):
    assert name in [n for _, n in private_uses(source)]


def test_the_scan_ignores_words_in_prose():
    source = '"""Nothing else reaches into ``ray._private``."""\nx = "run_metadata"\n'
    assert private_uses(source) == []




def test_ray_private_itself_is_what_the_scan_would_flag():
    """The scan is not vacuous on the real code: _ray_private.py is full of what it looks for."""
    found = {n for _, n in private_uses(Path(_ray_private.__file__).read_text())}
    assert {"_private", "_global_registry", "DEFAULT_ENV_VARS", "run_metadata"} <= found
