"""The study file: defaults, distributions, and every input error named with its field."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpo import cli
from hpo.config.rules import Rule, field_rule
from hpo.config.sections import MODEL_RULES, NOT_SEARCHABLE, TRAIN_RULES
from hpo.config.spec import (
    DataSpec,
    GapSpec,
    SanitySpec,
    SearchSpec,
    TrackingSpec,
    TrainConfig,
    load_spec,
    parse_spec,
)
from hpo.errors import ConfigError, ModelError, Problem, SpecError
from hpo.space.distributions import Categorical, Float, Int
from models import ModelConfig, config_problems

ROOT = Path(__file__).resolve().parents[2]


def problems_of(raw: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_spec(raw, source="t.yaml")
    return {p.path: p.render() for p in info.value.problems}


def test_empty_file_gives_every_default():
    spec = parse_spec({}, default_name="stem")
    assert spec.name == "stem" and spec.seed == 0
    assert spec.data.source == "digits" and spec.data.preprocess == ("zero_center",)
    assert spec.search.rounds == 4 and spec.search.trials_per_round == 18
    assert spec.search.resolved_mode == "max"
    assert spec.train["lr"] == 0.01 and spec.model["activation"] == "relu"
    assert spec.distributions() == {}


def test_distributions_are_typed_and_log_stays_log():
    spec = parse_spec({
        "model": {"activation": {"choice": ["relu", "tanh"]}, "hidden": {"choice": [[64], [128, 64]]},
                  "dropout": {"uniform": [0.0, 0.5]}},
        "train": {"lr": {"loguniform": [1e-4, 1.0]}, "batch_size": {"logint": [16, 256]},
                  "epochs": {"int": [2, 5]}},
    })
    d = spec.distributions()
    assert d["lr"] == Float(1e-4, 1.0, log=True)
    assert d["dropout"] == Float(0.0, 0.5, log=False)
    assert d["batch_size"] == Int(16, 256, log=True) and d["epochs"] == Int(2, 5)
    assert d["activation"] == Categorical(("relu", "tanh"))
    assert d["hidden"].choices == ((64,), (128, 64))


@pytest.mark.parametrize("raw, path, words", [
    ({"train": {"lr": {"loguniform": [0, 1]}}}, "train.lr", "0 < low"),
    ({"train": {"lr": {"loguniform": [1e-3, 1e-4]}}}, "train.lr", "low < high"),
    ({"train": {"lr": {"uniform": [1, 1]}}}, "train.lr", "low < high"),
    ({"train": {"lr": -0.1}}, "train.lr", "a number > 0"),
    ({"train": {"lr": "fast"}}, "train.lr", "wrong type"),
    ({"train": {"epochs": 2.5}}, "train.epochs", "whole number"),
    ({"train": {"epochs": {"uniform": [1, 5]}}}, "train.epochs", "int or logint"),
    ({"train": {"optimizer": "rmsprop"}}, "train.optimizer", "sgd | momentum | nesterov | adam"),
    ({"train": {"lr": {"normal": [0, 1]}}}, "train.lr", "one search distribution"),
    ({"model": {"activation": "swish"}}, "model.activation", "leaky_relu | prelu | elu | maxout"),
    ({"model": {"activation": {"choice": ["relu", "swish"]}}}, "model.activation.choice[1]",
     "swish"),
    ({"model": {"init": "glorot"}}, "model.init", "xavier"),
    ({"model": {"init": {"loguniform": [0.1, 1]}}}, "model.init", "use `choice`"),
    ({"model": {"dropout": {"uniform": [0.5, 1.5]}}}, "model.dropout", "[0, 1)"),
    ({"model": {"dropout": 1.0}}, "model.dropout", "[0, 1)"),
    ({"model": {"hidden": []}}, "model.hidden", "non-empty list"),
    ({"model": {"batchnorm": "yes"}}, "model.batchnorm", "true | false"),
    ({"model": {"arch": "resnet"}}, "model.arch", "mlp | convnet"),
    ({"model": {"width": 3}}, "model.width", "unknown key"),
    ({"model": {"activation": {"choice": []}}}, "model.activation", "at least one"),
    ({"model": {"activation": {"choice": ["relu", "relu"]}}}, "model.activation", "repeats"),
    ({"model": {"finetune": "classifier"}}, "model.finetune", "needs model.checkpoint"),
    ({"model": {"checkpoint": "/no/such/model.pt"}}, "model.checkpoint", "no such file"),
    ({"data": {"source": "imagenet"}}, "data.source", "digits | mnist"),
    ({"data": {"source": "csv"}}, "data.path", "a path is needed"),
    ({"data": {"path": "/no/such/file.npz", "source": "npz"}}, "data.path", "no such file"),
    ({"data": {"val_fraction": 0}}, "data.val_fraction", "(0, 1)"),
    ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}}, "data.test_fraction", "< 1"),
    ({"data": {"preprocess": ["zero_center", "sharpen"]}}, "data.preprocess", "whiten"),
    ({"data": {"val_fraction": {"uniform": [0.1, 0.2]}}}, "data.val_fraction",
     "only under model: and train:"),
    ({"search": {"sampler": "grid"}}, "search.sampler", "random | qmc | tpe"),
    ({"search": {"metric": "acc"}}, "search.metric", "val_accuracy"),
    ({"search": {"rounds": 0}}, "search.rounds", ">= 1"),
    ({"search": {"scheduler": "pbt"}}, "search.scheduler", "fifo | asha"),
    ({"search": {"resources_per_trial": {"cpu": 0}}}, "search.resources_per_trial", "cpu"),
    ({"search": {"bounds": {"lr": [1, 0]}}}, "search.bounds.lr", "lo < hi"),
    ({"search": {"bounds": {"activation": [0, 1]}}}, "search.bounds.activation", "numeric"),
    ({"search": {"bounds": {"lr": [1e-3, 1]}}, "train": {"lr": {"loguniform": [1e-5, 1]}}},
     "train.lr", "outside search.bounds.lr"),
    ({"gap": {"threshold": 2}}, "gap.threshold", "(0, 1]"),
    ({"sanity": {"strict": "no"}}, "sanity.strict", "true | false"),
    ({"seed": -1}, "seed", ">= 0"),
    ({"seeds": 1}, "seeds", "unknown key"),
])
def test_each_invalid_field_is_named_with_what_is_allowed(raw, path, words):
    found = problems_of(raw)
    assert path in found, found
    assert words in found[path]
    assert found[path].startswith(f"{path}:")


def test_all_problems_are_reported_in_one_pass():
    found = problems_of({"train": {"lr": -1, "optimizer": "x"}, "model": {"arch": "y"},
                         "search": {"rounds": 0}})
    assert {"train.lr", "train.optimizer", "model.arch", "search.rounds"} <= set(found)


def test_with_fixed_round_trips_as_a_study_without_distributions(tmp_path):
    spec = parse_spec({"model": {"activation": {"choice": ["relu", "tanh"]},
                                 "hidden": {"choice": [[32], [64, 32]]}},
                       "train": {"lr": {"loguniform": [1e-3, 1]}}}, default_name="s")
    fixed = spec.with_fixed({"activation": "tanh", "hidden": (64, 32), "lr": 0.0123})
    path = tmp_path / "best.yaml"
    path.write_text(fixed.to_yaml())
    again = load_spec(path)
    assert again.distributions() == {}
    assert again.model["activation"] == "tanh" and again.model["hidden"] == (64, 32)
    assert again.train["lr"] == pytest.approx(0.0123)
    assert again.to_dict() == fixed.to_dict()


def test_validate_cli_exit_codes_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"lr": {"loguniform": [0, 1]}},
                                   "model": {"activation": "swish"}}))
    run = subprocess.run([sys.executable, "-m", "hpo", "validate", str(bad)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert "train.lr" in run.stderr and "model.activation" in run.stderr
    assert str(bad) in run.stderr and "Traceback" not in run.stderr

    missing = subprocess.run([sys.executable, "-m", "hpo", "validate", "nope.yaml"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("model: {hidden: [1, 2\n")
    run = subprocess.run([sys.executable, "-m", "hpo", "validate", str(broken)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "not valid YAML" in run.stderr

    ok = subprocess.run([sys.executable, "-m", "hpo", "validate",
                         str(ROOT / "search_spaces" / "digits_mlp.yaml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    resolved = yaml.safe_load(ok.stdout)
    assert resolved["train"]["lr"] == {"loguniform": [1e-4, 1.0]}
    assert resolved["search"]["max_failures"] == 1  # defaults are filled in

    option = subprocess.run([sys.executable, "-m", "hpo", "search", "--bogus", "x.yaml"],
                            capture_output=True, text=True)
    assert option.returncode == 2


def test_spec_stays_pure():
    code = ("import sys, hpo.config.spec, hpo.space.distributions, hpo.cli; "
            "bad = {'torch', 'ray', 'mlflow', 'optuna'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- one declaration


@pytest.mark.parametrize("cls", [ModelConfig, TrainConfig, DataSpec, SearchSpec, GapSpec,
                                 SanitySpec, TrackingSpec])
def test_every_field_of_every_section_carries_its_rule(cls):
    for f in dataclasses.fields(cls):
        assert isinstance(field_rule(f), Rule), f.name


def test_the_searchable_sections_rules_are_read_off_the_config_dataclasses():
    assert MODEL_RULES == {f.name: field_rule(f) for f in dataclasses.fields(ModelConfig)}
    assert TRAIN_RULES == {f.name: field_rule(f) for f in dataclasses.fields(TrainConfig)}
    assert NOT_SEARCHABLE == {"checkpoint", "finetune"}
    spec = parse_spec({})
    assert spec.model == dataclasses.asdict(ModelConfig())
    assert spec.train == dataclasses.asdict(TrainConfig())


@pytest.mark.parametrize("field, value", [
    ("maxout_k", 1), ("maxout_k", 2), ("maxout_k", 16), ("maxout_k", 17),
    ("leaky_slope", -0.1), ("leaky_slope", 0), ("leaky_slope", 1),
    ("elu_alpha", 0), ("elu_alpha", 0.5), ("init_std", 0), ("init_std", 1e-3),
    ("dropout", 0), ("dropout", 0.5), ("dropout", 1),
    ("hidden", []), ("hidden", [0]), ("hidden", [3, 2]),
    ("batchnorm", "yes"), ("batchnorm", True), ("arch", "resnet"), ("arch", "convnet"),
    ("activation", "swish"), ("activation", "maxout"), ("init", "glorot"), ("init", "he"),
    ("finetune", "head"), ("finetune", 0), ("finetune", 2), ("finetune", "classifier"),
    ("checkpoint", ""), ("checkpoint", 3),
])
def test_the_study_file_and_the_model_validator_agree(field, value):
    typed = tuple(value) if isinstance(value, list) else value
    validator = {p.path for p in config_problems(ModelConfig(**{field: typed}))}
    try:
        parse_spec({"model": {field: value}})
        study: set[str] = set()
    except SpecError as exc:
        study = {p.path for p in exc.problems}
    assert validator == study


def test_a_model_error_is_an_input_error_at_the_command_line(monkeypatch, capsys):
    def fail(args):
        raise ModelError("checkpoint best.pt: no such file")

    monkeypatch.setattr(cli, "_dispatch", fail)
    assert cli.main(["validate", "x.yaml"]) == 2
    assert capsys.readouterr().err == "hpo: error: checkpoint best.pt: no such file\n"

    def problems(args):
        raise ConfigError([Problem("model.maxout_k", "out of range", 17, "2..16")])

    monkeypatch.setattr(cli, "_dispatch", problems)
    assert cli.main(["validate", "x.yaml"]) == 2
    assert capsys.readouterr().err.startswith("1 problem in the study file:\n  - model.maxout_k")


def test_the_packages_it_reads_do_not_import_it():
    # hpo.config reads models, hpo.data and hpo.trial.config; none of them may read it back.
    code = ("import sys, models, hpo.data, hpo.data.config, hpo.trial, hpo.trial.config; "
            "bad = [m for m in sys.modules if m.startswith('hpo.config')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
