"""The Optuna bridge's encode/decode: a list choice (``hidden: [64, 32]``) travels through
Optuna as a string and comes back as the study file's value. A continued round relies on it:
a cut-short trial is asked again with ``encode`` of its values, and must decode to the same
values (and so be recognized as the same trial)."""

from __future__ import annotations

import pytest

from hpo.errors import InputError
from hpo.space.bridge import choice_key, decode, encode, make_sampler, optuna_space, round_seed
from hpo.space.distributions import Categorical, Float, Int

RANGES = {
    "lr": Float(1e-4, 1.0, log=True),
    "batch_size": Int(16, 256, log=True),
    "hidden": Categorical(((64,), (128, 64), (256, 128, 64))),
    "kernels": Categorical((((3, 3), (5, 5)), ((3, 3),))),  # lists of lists
    "activation": Categorical(("relu", "tanh")),
    "batchnorm": Categorical((True, False)),
    "dropout": Categorical((None, 0.5)),
}
CONFIGS = [
    {"lr": 0.01, "batch_size": 64, "hidden": (128, 64), "kernels": ((3, 3), (5, 5)),
     "activation": "relu", "batchnorm": True, "dropout": None},
    {"lr": 1e-4, "batch_size": 16, "hidden": (64,), "kernels": ((3, 3),),
     "activation": "tanh", "batchnorm": False, "dropout": 0.5},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_encode_then_decode_gives_the_values_back(config):
    encoded = encode(RANGES, config)
    assert decode(RANGES, encoded) == config
    assert isinstance(decode(RANGES, encoded)["hidden"], tuple)


@pytest.mark.parametrize("config", CONFIGS)
def test_encoded_values_are_choices_optuna_knows(config):
    space = optuna_space(RANGES)
    for name, value in encode(RANGES, config).items():
        dist = space[name]
        assert dist._contains(dist.to_internal_repr(value)), (name, value)
    # list choices as strings; scalars (None and booleans included) as they are
    assert encode(RANGES, config)["hidden"] == choice_key(config["hidden"])
    assert encode(RANGES, config)["batchnorm"] is config["batchnorm"]
    assert encode(RANGES, config)["dropout"] == config["dropout"]


def test_every_choice_has_its_own_string():
    for dist in RANGES.values():
        if isinstance(dist, Categorical):
            keys = [choice_key(c) for c in dist.choices]
            assert len(set(keys)) == len(keys), keys


def test_a_string_that_names_no_choice_is_left_as_it_is():
    assert decode({"activation": Categorical(("relu", "tanh"))}, {"activation": "tanh"}) == {
        "activation": "tanh"}
    assert decode({"hidden": RANGES["hidden"]}, {"hidden": "[7]"}) == {"hidden": "[7]"}


def test_decode_reads_only_the_searched_names():
    config = {**encode(RANGES, CONFIGS[0]), "marker": "x", "__trial_index__": 3}
    assert decode(RANGES, config) == CONFIGS[0]


def test_a_config_asked_again_through_optuna_decodes_to_the_same_values():
    """What a continued round does: the cut-short trial's values, encoded, as Optuna's point to
    evaluate first; the searcher hands them back; decoded they are equal to the journal's."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space=optuna_space(RANGES), metric="val_accuracy", mode="max",
                            sampler=make_sampler("random", round_seed(0, 1, 1), 4),
                            points_to_evaluate=[encode(RANGES, c) for c in CONFIGS])
    # the finished trials of the interrupted round teach the searcher (list choices encoded)
    searcher.add_evaluated_point(encode(RANGES, CONFIGS[0]), 0.7)
    asked = [decode(RANGES, searcher.suggest(f"t{i}")) for i in range(3)]
    assert asked[:2] == CONFIGS
    assert all(RANGES[n].contains(v) for n, v in asked[2].items())
    assert isinstance(asked[2]["kernels"], tuple)


def test_an_unknown_sampler_is_an_input_error_naming_the_allowed_ones():
    allowed = r"unknown sampler 'grid' \(allowed: random \| qmc \| tpe\)"
    with pytest.raises(InputError, match=allowed):
        make_sampler("grid", 0, 10)


def test_a_continued_round_samples_with_a_seed_of_its_own():
    assert round_seed(0, 1) == round_seed(0, 1, 0)  # attempt 0 is the round as it first ran
    assert len({round_seed(0, 1), round_seed(0, 1, 1), round_seed(0, 1, 2), round_seed(0, 2)}) == 4
