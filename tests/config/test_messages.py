"""Messages that say what to write: numbers YAML reads as text, and keys one typo away.

The study files are YAML text, read by ``load_spec`` as ``hpo validate`` reads them: YAML 1.1
(PyYAML) reads ``1e-4`` as the string '1e-4' (a float needs a dot and a signed exponent).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from hpo.cli import main
from hpo.config.spec import load_spec
from hpo.errors import SpecError
from hpo.space.distributions import Float, Int, parse_distribution
from models.fields import Number, number_text_hint

HINT_1E_4 = "write 1.0e-4 (YAML reads 1e-4 as text)"


def problems(tmp_path: Path, text: str) -> dict[str, str]:
    """``{path: rendered problem}`` of the study file ``text``."""
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as info:
        load_spec(space)
    return {p.path: p.render() for p in info.value.problems}


# -- numbers YAML reads as text ---------------------------------------------------------------


@pytest.mark.parametrize("text, fix", [
    ("1e-4", "1.0e-4"),
    ("1E-4", "1.0e-4"),
    ("5e3", "5.0e+3"),
    ("2.5e3", "2.5e+3"),  # a dot is not enough: the exponent needs its sign
    ("1.0e4", "1.0e+4"),
    ("-3e-2", "-3.0e-2"),
    ("-.5", "-0.5"),  # no digit before the dot, and a sign: text to PyYAML
])
def test_every_suggestion_reads_back_as_the_same_number(text, fix):
    value = yaml.safe_load(f"x: {text}")["x"]
    assert value == text  # the trap: a string
    hint = number_text_hint(value)
    assert hint == f"write {fix} (YAML reads {text} as text)"
    assert yaml.safe_load(f"x: {fix}")["x"] == pytest.approx(float(text))


def test_a_quoted_number_is_told_to_lose_its_quotes_and_other_text_gets_no_hint():
    assert number_text_hint("0.5") == "write 0.5 without quotes (a quoted number is text)"
    assert number_text_hint("fast") == ""
    assert number_text_hint("nan") == "" and number_text_hint("inf") == ""
    assert number_text_hint(0.5) == "" and number_text_hint(None) == ""


def test_a_whole_number_field_is_told_the_whole_number():
    assert number_text_hint("1e3", integer=True) == "write 1000 (YAML reads 1e3 as text)"
    assert number_text_hint("2.5e0", integer=True) == "write 2.5e+0 (YAML reads 2.5e0 as text)"


def test_the_distribution_value_objects_say_what_to_write():
    with pytest.raises(ValueError) as info:
        parse_distribution({"loguniform": ["1e-4", 1]})
    assert str(info.value) == f"`low` must be a number, but got '1e-4': {HINT_1E_4}."
    with pytest.raises(ValueError, match=r"`high` must be a number, but got '1e3': write 1000 "):
        Int(low=1, high="1e3")
    with pytest.raises(ValueError, match=r"^`low` must be a number, but got 'x'\.$"):
        Float(low="x", high=1.0)  # not a number in any spelling: the message as before


def test_a_number_field_says_what_to_write():
    with pytest.raises(Exception) as info:
        Number(low=0).parse("1e-6")
    assert str(info.value) == "wrong type: write 1.0e-6 (YAML reads 1e-6 as text)"
    with pytest.raises(Exception, match="^wrong type$"):
        Number(low=0).parse("fast")


def test_a_study_file_with_1e_4_anywhere_numeric_says_what_to_write(tmp_path):
    found = problems(tmp_path, """
        seed: 1e1
        model:
          dropout: {choice: [0.0, 1e-1]}
        train:
          lr: {loguniform: [1e-4, 1]}
          weight_decay: 1e-6
          epochs: 2e1
        search:
          bounds:
            momentum: [0.0, 9e-1]
    """)
    assert found["train.lr"].startswith(
        f"train.lr: invalid loguniform: `low` must be a number, but got '1e-4': {HINT_1E_4}")
    assert found["train.weight_decay"].startswith(
        "train.weight_decay: wrong type: write 1.0e-6 (YAML reads 1e-6 as text) "
        "(given '1e-6'; allowed: a number >= 0)")
    assert found["train.epochs"].startswith(
        "train.epochs: wrong type: write 20 (YAML reads 2e1 as text)")
    assert found["seed"].startswith("seed: wrong type: write 10 (YAML reads 1e1 as text)")
    assert found["model.dropout.choice[1]"].startswith(
        "model.dropout.choice[1]: wrong type: write 1.0e-1 (YAML reads 1e-1 as text)")
    assert found["search.bounds.momentum"].startswith(
        "search.bounds.momentum: bounds must be [lo, hi] with lo < hi: write 9.0e-1 (YAML reads "
        "9e-1 as text)")


def test_lists_pack_and_resources_say_what_to_write_too(tmp_path):
    found = problems(tmp_path, """
        model:
          hidden: [64, 1e2]
        search:
          pack: 1e1
          resources_per_trial: {cpu: 5e-1}
    """)
    assert found["model.hidden"].startswith(
        "model.hidden: bad item [1]: wrong type: write 100 (YAML reads 1e2 as text)")
    assert found["search.pack"].startswith(
        "search.pack: wrong type: write 10 (YAML reads 1e1 as text)")
    assert found["search.resources_per_trial"].startswith(
        "search.resources_per_trial: wrong type: write 5.0e-1 (YAML reads 5e-1 as text)")


def test_the_same_file_written_as_told_validates(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("train:\n  lr: {loguniform: [1.0e-4, 1]}\n  weight_decay: 1.0e-6\n")
    spec = load_spec(space)
    assert spec.distributions()["lr"] == Float(1e-4, 1.0, log=True)
    assert spec.train["weight_decay"] == 1e-6


def test_hpo_validate_prints_the_hint_and_exits_2(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("train:\n  lr: {loguniform: [1e-4, 1]}\n")
    assert main(["validate", str(space)]) == 2
    assert HINT_1E_4 in capsys.readouterr().err


# -- keys one typo away -----------------------------------------------------------------------


def test_an_unknown_section_key_suggests_the_closest_known_one(tmp_path):
    found = problems(tmp_path, """
        model:
          batchnrom: true
          width: 3
        train:
          learning_rate: 0.1
          weigth_decay: 0.0
    """)
    assert found["model.batchnrom"].startswith(
        "model.batchnrom: unknown key; did you mean batchnorm? (allowed: arch, hidden,")
    assert found["train.weigth_decay"].startswith(
        "train.weigth_decay: unknown key; did you mean weight_decay? (allowed:")
    # nothing close enough: no guess
    assert found["model.width"].startswith("model.width: unknown key (allowed:")
    assert "did you mean" not in found["train.learning_rate"]


def test_an_unknown_top_level_key_suggests_the_closest_known_one(tmp_path):
    found = problems(tmp_path, """
        modle: {hidden: [16]}
        serach: {rounds: 1}
        seeds: 1
        whatever: 1
    """)
    assert found["modle"].startswith("modle: unknown key; did you mean model? (allowed: name, ")
    assert "did you mean search?" in found["serach"]
    assert "did you mean seed?" in found["seeds"]
    assert found["whatever"].startswith("whatever: unknown key (allowed:")


def test_a_bounds_key_one_typo_away_is_suggested(tmp_path):
    found = problems(tmp_path, "search:\n  bounds:\n    weigth_decay: [0.0, 0.1]\n")
    assert "not a numeric model/train field; did you mean weight_decay?" in found[
        "search.bounds.weigth_decay"]
