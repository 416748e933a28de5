"""Limits on a study file: its size, the values its YAML aliases expand to, what a message quotes.

Before the limits a 300-byte "billion laughs" file under ``model.hidden`` took 125 s, 6 GB and
a 2 GB error message; a 50 MB list under an unknown key 3.8 GB and no answer. Each case here
is an input error (exit 2) naming the file and the field, in well under a second.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hpo.cli import main
from hpo.config._yaml import MAX_FILE_BYTES, MAX_VALUES
from hpo.config.spec import load_spec
from hpo.errors import QUOTE_CHARS, SpecError
from tests.fixtures.cli import run_hpo

#: Nine lists of nine, each of the one before: 9^9 = 387,420,489 ones from 300 bytes, all
#: under model.hidden (its anchors included).
LAUGHS = "model:\n  hidden:\n" + "".join(
    f"    - &{a} [{','.join([f'*{b}'] * 9) if b else ','.join(['1'] * 9)}]\n"
    for a, b in zip("abcdefghi", ["", *"abcdefgh"], strict=True))


def refused(tmp_path: Path, text: str | bytes) -> tuple[SpecError, float]:
    """The SpecError that loading ``text`` as a study file raises, and the seconds it took."""
    space = tmp_path / "space.yaml"
    if isinstance(text, bytes):
        space.write_bytes(text)
    else:
        space.write_text(text)
    start = time.monotonic()
    with pytest.raises(SpecError) as info:
        load_spec(space)
    return info.value, time.monotonic() - start


def test_billion_laughs_under_model_hidden_is_refused_at_once_naming_the_field(tmp_path):
    assert len(LAUGHS) < 400, len(LAUGHS)
    error, seconds = refused(tmp_path, LAUGHS)
    [problem] = error.problems
    assert problem.path.startswith("model.hidden")
    assert f"more than {MAX_VALUES:,} values" in problem.message
    assert "alias" in problem.message
    assert str(tmp_path / "space.yaml") in str(error)
    assert seconds < 2 and len(str(error)) < 500


def test_an_alias_of_itself_is_refused_not_followed_forever(tmp_path):
    error, seconds = refused(tmp_path, "model:\n  hidden: &h [64, *h]\n")
    assert [p.path for p in error.problems] == ["model.hidden"]
    assert seconds < 2


def test_a_long_list_under_an_unknown_key_is_refused_fast(tmp_path):
    # Under 1 MB, but more values than any study file holds: not parsed into Python objects.
    text = "notes: [" + ",".join(["1"] * 400_000) + "]\n"
    assert len(text) < MAX_FILE_BYTES
    error, seconds = refused(tmp_path, text)
    assert [p.path for p in error.problems] == ["notes"]
    assert seconds < 3


def test_a_study_file_over_one_mib_is_refused_unread(tmp_path):
    error, seconds = refused(tmp_path, "notes: " + "x" * MAX_FILE_BYTES + "\n")
    [problem] = error.problems
    assert problem.path == "(file)" and "larger than 1 MiB" in problem.message
    assert seconds < 1


def test_bytes_that_are_not_utf8_are_an_input_error(tmp_path):
    error, _ = refused(tmp_path, b"name: caf\xe9\n")
    assert "not UTF-8" in error.problems[0].message


def test_nesting_thousands_deep_is_an_input_error(tmp_path):
    error, _ = refused(tmp_path, "x: " + "[" * 20_000 + "]" * 20_000 + "\n")
    assert error.problems[0].message.startswith(("not valid YAML", "values nested too deeply"))


def test_a_message_quotes_at_most_a_few_hundred_characters_of_a_value(tmp_path):
    # 5,000 widths that are not numbers, and a key of 50,000 characters: within the limits,
    # wrong, and each quoted only in part.
    text = ("model:\n  hidden: [" + ", ".join(["wide"] * 5_000) + "]\n"
            "  ? " + "k" * 50_000 + "\n  : 1\n"  # an explicit key: a plain one ends at 1024
            "train:\n  optimizer: " + "o" * 50_000 + "\n")
    error, _ = refused(tmp_path, text)
    lines = str(error).splitlines()
    assert len(lines) == 4  # the heading and three problems
    assert all(len(line) < 4 * QUOTE_CHARS for line in lines)
    assert "model.hidden:" in str(error) and "train.optimizer:" in str(error)
    assert str(error).count("... (cut)") >= 2
    # the problems themselves keep the whole value (for code that reads them)
    hidden = next(p for p in error.problems if p.path == "model.hidden")
    assert len(hidden.given) == 5_000


def test_validate_in_process_exits_2_on_billion_laughs(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text(LAUGHS)
    assert main(["validate", str(tmp_path / "space.yaml")]) == 2
    err = capsys.readouterr().err
    assert "model.hidden" in err and len(err) < 500


@pytest.mark.parametrize("text, says", [
    (LAUGHS, "model.hidden"),
    ("notes: " + "x" * (MAX_FILE_BYTES + 1) + "\n", "larger than 1 MiB"),
    ("train:\n  optimizer: " + "o" * 100_000 + "\n", "... (cut)"),
], ids=["billion-laughs", "over-1-MiB", "long-value"])
def test_the_real_hpo_validate_exits_2_quickly_with_a_short_message(tmp_path, text, says):
    (tmp_path / "space.yaml").write_text(text)
    start = time.monotonic()
    result = run_hpo("validate", "space.yaml", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert time.monotonic() - start < 30  # the interpreter's start included
    assert "space.yaml" in result.stderr and says in result.stderr
    assert len(result.stderr) < 1000 and "Traceback" not in result.stderr
