"""A packed run and unpacked runs of the same configurations and seed agree, member by member."""

from __future__ import annotations

import pytest
import torch

from hpo.data.dataset import load_dataset
from hpo.trial.pack import pack_key, train_pack
from hpo.trial.status import TrialStatus
from hpo.config.spec import parse_spec
from hpo.trial.train import train_trial
from tests.fixtures.trials import assert_same_trial as assert_same

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def data():
    spec = parse_spec({"data": {"source": "digits", "preprocess": ["zero_center", "normalize"]}})
    return load_dataset(spec.data, seed=0)


def members(**shared):
    spec = parse_spec({"model": {"hidden": [32, 16], "activation": "relu", "init": "he",
                                 **shared.pop("model", {})},
                       "train": {"epochs": 3, "batch_size": 64, **shared}})
    lrs_wds = [(0.01, 0.0), (0.05, 1e-3), (0.2, 1e-4), (300.0, 0.0)]  # the last one diverges
    return [{**spec.resolve({}), "lr": lr, "weight_decay": wd, "momentum": 0.9 - 0.1 * i}
            for i, (lr, wd) in enumerate(lrs_wds)]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
@pytest.mark.parametrize("setting", [
    {"optimizer": "momentum"},
    {"optimizer": "nesterov", "model": {"batchnorm": True}},
    {"optimizer": "sgd", "model": {"activation": "prelu"}},
    {"optimizer": "adam", "model": {"activation": "maxout", "batchnorm": True}},
])
def test_packed_equals_unpacked_per_member_including_a_diverged_one(data, setting, device):
    torch.set_num_threads(1)
    configs = members(**setting)
    if setting["optimizer"] == "adam":  # adam-sized steps; its step is bounded by lr, so the
        for c in configs[:-1]:          # last one needs a huge lr to explode
            c["lr"] *= 0.05
        configs[-1]["lr"] = 1e4
    reports = []
    packed = train_pack(configs, data, seed=0, report=reports.append, device=device)
    alone = [train_trial(c, data, seed=0, device=device) for c in configs]
    assert [o.status for o in alone].count(TrialStatus.DIVERGED) == 1
    assert all(isinstance(o.status, TrialStatus) for o in [*packed, *alone])
    for p, a in zip(packed, alone):
        assert_same(p, a)
    # after its divergence a member reports nothing more; the others report every epoch
    assert [r[-1] is None for r in reports[1:]] == [True] * (len(reports) - 1)
    assert all(r[0] is not None for r in reports)


def test_members_must_share_the_structure(data):
    a, b = members()[:2]
    b = {**b, "hidden": (64,)}
    assert pack_key(a) != pack_key(b)
    with pytest.raises(ValueError, match="share every structural field"):
        train_pack([a, b], data, seed=0)


@pytest.mark.slow
def test_a_packed_study_logs_one_mlflow_run_per_member_like_an_unpacked_one(tmp_path):
    from mlflow.tracking import MlflowClient

    from hpo.study.run import run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    shapes = {}
    for pack in (1, 4):
        spec = parse_spec({
            "name": f"pack{pack}",
            "data": {"source": "digits", "preprocess": ["zero_center", "normalize"]},
            "model": {"hidden": [32], "activation": {"choice": ["relu", "tanh"]}, "init": "he"},
            "train": {"epochs": 2, "lr": {"loguniform": [1e-2, 1e4]}, "optimizer": "sgd"},
            "search": {"rounds": 1, "trials_per_round": 6, "pack": pack},
            "sanity": {"enabled": False},
        })
        result = run_study(spec, tracking_uri=uri, quiet=True, study_root=tmp_path)
        assert len(result.records) == 6
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(f"pack{pack}")
        trials = [r for r in client.search_runs([exp.experiment_id])
                  if r.data.tags["hpo.kind"] == "trial"]
        assert len(trials) == 6  # one run per member
        assert len({t.data.tags["hpo.trial"] for t in trials}) == 6
        statuses = {t.data.tags["hpo.status"] for t in trials}
        ok = [t for t in trials if t.data.tags["hpo.status"] != "diverged"]
        steps = {tuple(m.step for m in client.get_metric_history(t.info.run_id, "val_accuracy"))
                 for t in ok}
        shapes[pack] = {
            "params": {frozenset(t.data.params) for t in trials},
            "tags": {frozenset(k for k in t.data.tags if not k.startswith("mlflow.")) for t in ok},
            # per activation: relu trials log dead units, tanh trials saturated ones
            "metrics": {(t.data.params["activation"], frozenset(t.data.metrics)) for t in ok},
            "steps": steps,
            "parents": {t.data.tags["mlflow.parentRunId"] for t in trials},
        }
        assert "diverged" in statuses  # lr up to 1e4 with plain sgd: some members explode
    for key in ("params", "tags", "steps"):
        assert shapes[1][key] == shapes[4][key], key
    both = {a for a, _ in shapes[1]["metrics"]} & {a for a, _ in shapes[4]["metrics"]}
    assert both  # at least one activation trained in both studies
    for activation in both:
        assert ({m for a, m in shapes[1]["metrics"] if a == activation}
                == {m for a, m in shapes[4]["metrics"] if a == activation})
    assert len(shapes[1]["parents"]) == len(shapes[4]["parents"]) == 1  # all under their round


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_the_diagnostics_vectorized_over_members_agree_with_member_by_member(
        data, activation, monkeypatch):
    """What train_pack computes off the CPU (update ratios and activation statistics of all
    members at once), run here against the member-by-member path the CPU takes."""
    import hpo.trial.pack

    torch.set_num_threads(1)
    configs = members(optimizer="momentum", model={"activation": activation, "batchnorm": True})
    by_member = train_pack(configs, data, seed=0)
    monkeypatch.setattr(hpo.trial.pack, "_member_by_member", lambda device: False)
    vectorized = train_pack(configs, data, seed=0)
    assert any(k.startswith("act.") for k in by_member[0].last)
    for v, m in zip(vectorized, by_member):
        assert v.status == m.status and len(v.history) == len(m.history)
        for hv, hm in zip(v.history, m.history):
            assert set(hv) == set(hm)
            for key, value in hm.items():
                if key.startswith(("act.", "update_ratio")):
                    assert hv[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
                else:
                    assert hv[key] == value, key  # the training itself is the same code
