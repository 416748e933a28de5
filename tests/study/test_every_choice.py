"""`hpo search` takes every activation and initializer of the factory from a study file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo.config.spec import load_spec, parse_spec
from hpo.study.run import run_study
from models.registry import ACTIVATIONS, INITIALIZERS

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "digits_every_choice.yaml"


def test_the_shipped_study_lists_every_registered_name():
    d = load_spec(SPACE).distributions()
    assert list(d["activation"].choices) == ACTIVATIONS.names()
    assert list(d["init"].choices) == INITIALIZERS.names()


@pytest.mark.slow
def test_a_search_trains_every_activation_and_initializer(tmp_path):
    raw = load_spec(SPACE).to_dict()
    raw["model"]["hidden"] = [16]
    raw["train"]["epochs"] = 1
    raw["search"]["trials_per_round"] = 28
    result = run_study(parse_spec(raw), tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                       quiet=True, study_root=tmp_path)
    assert len(result.records) == 28
    assert all(r.status != "failed" for r in result.records), [r.error for r in result.records]
    # the seeded sampler's 28 draws reach every name of both registries
    assert {r.params["activation"] for r in result.records} == set(ACTIVATIONS.names())
    assert {r.params["init"] for r in result.records} == set(INITIALIZERS.names())
