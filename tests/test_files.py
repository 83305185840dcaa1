import csv
import json
import math

import numpy as np
import pytest

from aelab.files import format_csv_cell, read_csv, read_json, write_csv, write_json

TRICKY_IDS = [
    "a\rb",
    "a\nb",
    "a\r\nb",
    "\r",
    "x,y",
    'q"uote',
    "=cmd|' /C calc'!A0",
    "-2+3",
    "+1",
    "@SUM(1)",
    "\tindent",
    "'quoted",
    "'=already",
    "plain",
    "",
    "ünïcode ✓",
]


def raw_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_csv_fields_round_trip_through_the_stdlib_reader(tmp_path):
    path = write_csv(
        tmp_path / "out.csv", ["id", "score"], [(t, i) for i, t in enumerate(TRICKY_IDS)]
    )
    rows = raw_rows(path)
    assert rows[0] == ["id", "score"]
    assert len(rows) == len(TRICKY_IDS) + 1  # no field split a row
    for (cell, score), text, i in zip(rows[1:], TRICKY_IDS, range(len(TRICKY_IDS)), strict=True):
        assert cell == format_csv_cell(text)
        assert score == str(i)
    # The guard, exactly as a spreadsheet sees the cells.
    got = {t: r[0] for t, r in zip(TRICKY_IDS, rows[1:], strict=True)}
    assert got["=cmd|' /C calc'!A0"] == "'=cmd|' /C calc'!A0"
    assert got["-2+3"] == "'-2+3"
    assert got["@SUM(1)"] == "'@SUM(1)"
    assert got["\tindent"] == "'\tindent"
    assert got["\r"] == "'\r"
    assert got["a\rb"] == "a\rb" and got["x,y"] == "x,y" and got['q"uote'] == 'q"uote'
    # read_csv undoes the guard: every id comes back as given.
    header, back = read_csv(path)
    assert header == ["id", "score"]
    assert [r[0] for r in back] == TRICKY_IDS


def test_csv_lone_carriage_return_is_quoted(tmp_path):
    path = write_csv(tmp_path / "cr.csv", ["id"], [["a\rb"]])
    text = path.read_bytes().decode()
    assert text == 'id\n"a\rb"\n'


def test_csv_numbers_stay_numbers(tmp_path):
    values = [-2.5, -3, 0.1, np.float32(-0.25), np.int64(-7), float("nan"), -math.inf, True, None]
    path = write_csv(tmp_path / "n.csv", [f"c{i}" for i in range(len(values))], [values])
    row = raw_rows(path)[1]
    assert row == ["-2.5", "-3", "0.1", "-0.25", "-7", "nan", "-inf", "True", ""]
    assert float(row[0]) == -2.5 and float(row[3]) == -0.25
    # The same text as a string is guarded: it is not a number the caller gave.
    assert format_csv_cell("-2.5") == "'-2.5"


def test_csv_row_length_checked_and_nothing_written(tmp_path):
    with pytest.raises(ValueError, match="row 1 has 1 cells for 2 columns"):
        write_csv(tmp_path / "bad.csv", ["a", "b"], [[1, 2], [3]])
    assert list(tmp_path.iterdir()) == []


def test_read_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_csv(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_csv(tmp_path / "empty.csv")


def strict_loads(text):
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_has_no_bare_nan(tmp_path):
    obj = {
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": -math.inf,
        "np_nan": np.float32("nan"),
        "np_inf": np.float64("inf"),
        "arr": np.array([1.0, np.nan, -np.inf, 2.5]),
        "arr2d": np.array([[np.nan, 1], [2, np.inf]], dtype=np.float16),
        "nested": [{"deep": (1.5, float("nan"))}, [np.nan]],
        "ints": np.arange(3, dtype=np.int16),
        "np_int": np.int64(7),
        "np_bool": np.bool_(True),
        np.int64(3): "numpy key",
        "ok": -2.5,
        "text": "NaN",
    }
    path = write_json(tmp_path / "x.json", obj)
    text = path.read_text()
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text
    back = strict_loads(text)
    assert back == {
        "nan": None,
        "inf": None,
        "ninf": None,
        "np_nan": None,
        "np_inf": None,
        "arr": [1.0, None, None, 2.5],
        "arr2d": [[None, 1.0], [2.0, None]],
        "nested": [{"deep": [1.5, None]}, [None]],
        "ints": [0, 1, 2],
        "np_int": 7,
        "np_bool": True,
        "3": "numpy key",
        "ok": -2.5,
        "text": "NaN",
    }
    assert read_json(path) == back


def test_json_finite_values_round_trip_exactly(tmp_path):
    obj = {"a": [0.1, 1e-300, 1.7976931348623157e308, -0.0], "b": np.float64(1 / 3)}
    back = strict_loads(write_json(tmp_path / "f.json", obj).read_text())
    assert back["a"] == obj["a"] and back["b"] == 1 / 3


def test_json_refuses_unknown_objects_and_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match="cannot write set"):
        write_json(tmp_path / "s.json", {"a": {1, 2}})
    assert list(tmp_path.iterdir()) == []
