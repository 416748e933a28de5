"""The terminal's tables and the markdown report from the same rows; how values and ranges
read; the advice sentences the trials earn."""

from __future__ import annotations

import pytest

from hpo.report.advice import advice
from hpo.report.tables import fmt_range, fmt_value, table
from hpo.space.distributions import Categorical, Float, Int
from hpo.trial.record import TrialRecord
from hpo.trial.status import TrialStatus

HEADERS = ["param", "range", "best"]
ROWS = [["lr", Float(1e-4, 0.1, log=True), 0.0123],
        ["hidden", Categorical(((64,), (128, 64))), (128, 64)],
        ["batchnorm", Categorical((True, False)), True]]


def rows() -> list[list]:
    return [[name, fmt_range(dist), best] for name, dist, best in ROWS]


def test_the_terminal_table_is_aligned_columns_under_a_rule():
    assert table(HEADERS, rows()).splitlines() == [
        "param      range                best",
        "---------  -------------------  ---------",
        "lr         log [1.00e-04, 0.1]  0.0123",
        "hidden     {[64], [128, 64]}    [128, 64]",
        "batchnorm  {true, false}        true",
    ]


def test_the_markdown_table_holds_the_same_cells():
    md = table(HEADERS, rows(), markdown=True).splitlines()
    assert md[0] == "| param     | range               | best      |"
    assert md[1] == "|-----------|---------------------|-----------|"
    assert md[2] == "| lr        | log [1.00e-04, 0.1] | 0.0123    |"
    md_cells = [[c.strip() for c in line.strip("|").split("|")] for line in md[:1] + md[2:]]
    # the terminal's cells, cut at the columns its rule line marks
    terminal = table(HEADERS, rows()).splitlines()
    rule = terminal[1]
    spans = [(i, rule.index(" ", i) if " " in rule[i:] else len(rule))
             for i, ch in enumerate(rule) if ch == "-" and (i == 0 or rule[i - 1] == " ")]
    term_cells = [[line[a:b].strip() for a, b in spans] for line in terminal[:1] + terminal[2:]]
    assert md_cells == term_cells
    assert md_cells[1] == ["lr", "log [1.00e-04, 0.1]", "0.0123"]


def test_no_trailing_spaces_and_one_line_per_row():
    text = table(["a", "long header"], [["x", ""], ["yy", 1]])
    assert all(line == line.rstrip() for line in text.splitlines())
    assert len(text.splitlines()) == 4
    assert table(["a"], []).splitlines() == ["a", "-"]


@pytest.mark.parametrize("value, text", [
    (True, "true"), (False, "false"), (None, "none"),
    (0.5, "0.5"), (0.0123456, "0.0123"), (0.001, "0.001"), (-0.5, "-0.5"), (9999.0, "1e+04"),
    (1e-4, "1.00e-04"), (12345.0, "1.23e+04"), (-2e-5, "-2.00e-05"), (0.0, "0"),
    (3, "3"), ("relu", "relu"), ((64, 32), "[64, 32]"), ([0.5, True], "[0.5, true]"),
])
def test_fmt_value(value, text):
    assert fmt_value(value) == text


@pytest.mark.parametrize("dist, text", [
    (None, "-"),
    (Float(1e-4, 0.1, log=True), "log [1.00e-04, 0.1]"),
    (Float(0.0, 0.5), "[0, 0.5]"),
    (Int(16, 256, log=True), "log [16, 256]"),
    (Int(1, 3), "[1, 3]"),
    (Categorical(("relu", "tanh")), "{relu, tanh}"),
    (Categorical(((64,), (128, 64))), "{[64], [128, 64]}"),
    (Categorical((True, False)), "{true, false}"),
])
def test_fmt_range(dist, text):
    assert fmt_range(dist) == text


# -- advice -----------------------------------------------------------------------------------

def trial(i: int, status: TrialStatus, lr: float = 0.01, flags: tuple[str, ...] = ()
          ) -> TrialRecord:
    return TrialRecord(round=1, index=i, trial_id=f"t{i}", params={"lr": lr},
                       sampled={"lr": lr}, status=status, flags=list(flags))


def say(records: list[TrialRecord]) -> list[str]:
    return advice(records, metric="val_accuracy", gap_threshold=0.1)


def test_healthy_trials_earn_one_sentence_saying_so():
    assert say([trial(1, TrialStatus.OK), trial(2, TrialStatus.OK)]) == [
        "no trial overfit, underfit or diverged, and update/weight ratios stayed near 1e-3."]


def test_no_finished_trial_points_at_the_errors():
    records = [trial(1, TrialStatus.FAILED), trial(2, TrialStatus.RUNNING)]
    assert say(records) == ["no trial finished: look at the failed runs' hpo.error tags"]
    assert say([]) == say(records)


def test_overfitting_counts_the_finished_trials_and_names_the_remedy():
    records = [trial(1, TrialStatus.OVERFITTING), trial(2, TrialStatus.OVERFITTING),
               trial(3, TrialStatus.OK), trial(4, TrialStatus.FAILED)]
    (sentence,) = advice(records, metric="val_accuracy", gap_threshold=0.15)
    assert sentence == ("2 of 3 trials overfit (train - val accuracy > 0.15): increase "
                        "regularization (weight_decay, dropout) or reduce capacity (fewer or "
                        "narrower layers).")


def test_underfitting_says_raise_capacity():
    (sentence,) = say([trial(1, TrialStatus.UNDERFITTING), trial(2, TrialStatus.OK)])
    assert sentence.startswith("1 trials underfit (train and val accuracy both low): raise "
                               "capacity")


def test_diverged_trials_name_their_lr_range_and_the_highest_that_trained():
    records = [trial(1, TrialStatus.DIVERGED, lr=0.9), trial(2, TrialStatus.DIVERGED, lr=0.5),
               trial(3, TrialStatus.OK, lr=0.1), trial(4, TrialStatus.OVERFITTING, lr=0.2),
               trial(5, TrialStatus.FAILED, lr=5.0)]  # failed: not a trial that trained
    sentences = say(records)
    assert ("2 trials diverged (loss exploded) at lr 0.5 to 0.9; the highest lr that trained "
            "was 0.2: the learning rate's upper end is too high; keep it below 0.5.") in sentences
    assert len(sentences) == 2  # and the overfitting one


def test_divergence_above_a_last_round_that_stays_below_it_does_not_call_the_range_too_high():
    """The round tables show the last round's range, its best at the top edge; the diverged
    trials were earlier rounds' and higher: the advice agrees with the table."""
    records = [trial(1, TrialStatus.DIVERGED, lr=0.5), trial(2, TrialStatus.OK, lr=0.0231)]
    last = {"lr": Float(0.002, 0.0231, log=True)}
    (sentence,) = advice(records, metric="val_accuracy", gap_threshold=0.1, last_ranges=last)
    assert sentence == ("1 trials diverged (loss exploded) at lr 0.5; the highest lr that "
                        "trained was 0.0231: the last round's lr range log [0.002, 0.0231] "
                        "already stays below them.")
    assert "too high" not in sentence
    # a last round that still reaches them: its upper end is too high
    reaching = {"lr": Float(0.002, 0.8, log=True)}
    (sentence,) = advice(records, metric="val_accuracy", gap_threshold=0.1, last_ranges=reaching)
    assert sentence.endswith("the learning rate's upper end is too high; keep it below 0.5.")


def test_divergence_among_lrs_that_trained_is_not_blamed_on_the_learning_rate():
    records = [trial(1, TrialStatus.DIVERGED, lr=0.01), trial(2, TrialStatus.OK, lr=0.05)]
    (sentence,) = say(records)
    assert sentence == ("1 trials diverged (loss exploded) at lr 0.01, where other trials "
                        "trained (up to lr 0.05): not the learning rate alone; compare their "
                        "init, batchnorm and weight_decay.")


def test_diverged_without_a_searched_lr_says_so_without_numbers():
    records = [TrialRecord(round=1, index=1, trial_id="t", params={}, sampled={},
                           status=TrialStatus.DIVERGED)]
    assert say(records) == ["1 trials diverged (loss exploded): compare their init, batchnorm "
                            "and weight_decay with the trials that trained."]


@pytest.mark.parametrize("flag, says", [
    ("update-ratio-high", "update/weight ratio above 1e-2: learning rate probably too high "
                          "(the notes aim for ~1e-3)."),
    ("update-ratio-low", "update/weight ratio below 1e-4: learning rate probably too low "
                         "(the notes aim for ~1e-3)."),
    ("dead-units", "more than half of a layer's ReLU units dead: lower the learning rate or use "
                   "leaky_relu / elu / maxout."),
    ("saturated-units", "more than half of a layer's units saturated: smaller initial weights "
                        "(xavier), batchnorm, or relu."),
])
def test_each_flag_earns_its_sentence(flag, says):
    records = [trial(1, TrialStatus.OK, flags=(flag,)), trial(2, TrialStatus.OK, flags=(flag,)),
               trial(3, TrialStatus.OK)]
    assert say(records) == [f"2 trials with {says}"]


def test_findings_come_in_a_fixed_order():
    records = [trial(1, TrialStatus.DIVERGED, lr=1.0),
               trial(2, TrialStatus.OVERFITTING, flags=("dead-units",)),
               trial(3, TrialStatus.UNDERFITTING, flags=("update-ratio-low",))]
    topics = [next(w for w in ("overfit", "underfit", "diverged", "ratio below", "dead")
                   if w in sentence) for sentence in say(records)]
    assert topics == ["overfit", "underfit", "diverged", "ratio below", "dead"]
