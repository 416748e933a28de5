"""A data file's error quotes at most a few hundred characters of what it found."""

from __future__ import annotations

import pytest

from hpo.data._files import read_csv
from hpo.errors import DataError


def test_a_long_csv_cell_is_quoted_in_part(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("a,b,label\n1," + "x" * 100_000 + ",0\n")
    with pytest.raises(DataError) as info:
        read_csv(path, "label")
    message = str(info.value)
    assert len(message) < 600 and "wide.csv, line 2, column 'b'" in message
    assert "... (cut) is not a number" in message


def test_a_huge_header_is_listed_in_part(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(100_000)) + "\n1\n")
    with pytest.raises(DataError) as info:
        read_csv(path, "label")
    assert len(str(info.value)) < 600 and "no target column 'label'" in str(info.value)


def test_a_cell_past_the_csv_modules_limit_is_a_data_error_naming_the_line(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text("a,b,label\n1,2,0\n1," + "x" * 1_000_000 + ",0\n")
    with pytest.raises(DataError) as info:
        read_csv(path, "label")
    assert "huge.csv, line 3: not readable as csv" in str(info.value)
    assert len(str(info.value)) < 300
