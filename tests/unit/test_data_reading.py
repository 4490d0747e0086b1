"""Day-one data gets in (issue 19): contracts that stay valid TOML, reading options that
are sniffed, stored and applied, time columns with clear errors, wide files profiled in
one pass."""

import json
import tomllib

import pytest
from tests.messy_data import HEADER, NEW_REGION, REGIONS, write_messy_csv

from mlops_console.data import contract as contracts
from mlops_console.data.contract_file import dumps
from mlops_console.data.read_options import USUAL_NA, ReadOptions, choose, describe
from mlops_console.data.reading import DataError, read_file, to_times

ODD_NAMES = [
    "Gekündigt",
    "Alter (Jahre)",
    "Umsatz €",
    "Kunden.Nr",
    'Notiz "intern"',
    "back\\slash",
    "a[0]",
    "x = y",
    " ",
    "tab\tand\nnewline\x01",
    "#comment",
    "plain_name-2",
    "日本語",
]


def test_contract_toml_round_trips_any_column_name():
    contract = contracts.Contract(
        dataset="kunden",
        keys=contracts.KeysRule(unique=["Kunden.Nr", "Datum"]),
        freshness=contracts.FreshnessRule(column="Datum"),
        columns={
            name: contracts.ColumnRule(
                type="string", nullable=False, categories=["ja", "nein", 'sagt "später"\\']
            )
            for name in ODD_NAMES
        }
        | {"Preis": contracts.ColumnRule(type="float", min=-0.5, max=1e6)},
    )
    text = dumps(contract, "Inferred from version 1.")
    assert "[columns.plain_name-2]" in text and '[columns."Gekündigt"]' in text
    assert contracts.Contract(**tomllib.loads(text)) == contract


def test_usual_na_spellings_are_pyarrows():
    import pyarrow.csv as pcsv

    assert set(USUAL_NA) == set(pcsv.ConvertOptions().null_values)


def test_messy_file_is_sniffed_and_read_with_numbers_as_numbers(tmp_path):
    path = write_messy_csv(tmp_path / "kunden.csv")
    stored = choose(path, {})
    assert stored["delimiter"] == ";" and stored["decimal"] == ","
    assert stored["thousands"] == "." and stored["encoding"] == "cp1252"
    assert stored["na_values"] == ["-"] and stored["date_formats"] == ["%d.%m.%Y"]
    assert set(stored["sniffed"]) == {
        "delimiter",
        "decimal",
        "thousands",
        "na_values",
        "encoding",
        "date_formats",
    }
    assert describe(stored).startswith("delimiter ';', decimal ',', thousands '.', NA 'NA'")

    table = read_file(path, "kunden.csv", ReadOptions.from_dict(stored), time_column="Datum")
    types = {f.name: str(f.type) for f in table.schema}
    assert table.schema.names == HEADER and table.num_rows == 2000
    assert types["Kunden.Nr"] == "int64" and types["Alter (Jahre)"] == "int64"
    assert types["Umsatz €"] == "double" and types["Rabatt %"] == "double"
    assert types["Datum"] == "timestamp[s]" and types["Region"] == "string"
    rows = table.slice(0, 5).to_pylist()
    assert rows[0]["Datum"].isoformat() == "2025-01-01T00:00:00"  # written 2025-01-01
    assert rows[1]["Datum"].isoformat() == "2025-01-02T00:00:00"  # written 02.01.2025
    assert rows[0]["Alter (Jahre)"] is None and rows[0]["Umsatz €"] is None  # 'n/a', 'n/a'
    assert rows[1]["Umsatz €"] == 915.92 and rows[3]["Umsatz €"] == 2505.45  # '2.505,45'
    assert set(table.column("Region").to_pylist()) <= set(REGIONS)
    churn = table.column("Gekündigt").to_pylist()
    assert set(churn) == {"ja", "nein"} and 0.02 < churn.count("ja") / len(churn) < 0.08

    # Read without options (a pipeline's [data].path), the head is sniffed the same way.
    assert read_file(path, "kunden.csv").schema == table.schema


def test_given_options_win_over_sniffing_and_are_checked(tmp_path):
    path = write_messy_csv(tmp_path / "kunden.csv", rows=50)
    stored = choose(path, {"na_values": ["-", "?"], "date_formats": ["%d.%m.%Y", "%Y-%m-%d"]})
    assert stored["na_values"] == ["-", "?"] and "na_values" not in stored["sniffed"]
    assert stored["date_formats"] == ["%d.%m.%Y", "%Y-%m-%d"] and "na_seen" not in stored
    for given, message in [
        ({"delimiter": ";;"}, "one character"),
        ({"decimal": ";"}, "decimal mark"),
        ({"thousands": ","}, "also the decimal mark"),
        ({"encoding": "klingon"}, "not an encoding"),
        ({"date_formats": ["dd.mm.yyyy"]}, "no %-directive"),
    ]:
        with pytest.raises(DataError, match=message):
            choose(path, given)
    assert ReadOptions.from_dict({"delimiter": "\\t", "encoding": "UTF8"}) == ReadOptions(
        delimiter="\t"
    )


def test_a_comma_decimal_far_down_the_file_still_makes_a_number(tmp_path):
    # pyarrow infers types from the first ~1 MB; '1.234,56' after 60,000 rows of '12,5'
    # must not make the column text (nor fail the read).
    path = tmp_path / "late.csv"
    path.write_text("id;betrag\n" + "".join(f"{i};12,5\n" for i in range(80_000)) + "x;1.234,56\n")
    options = ReadOptions(delimiter=";", decimal=",", thousands=".")
    column = read_file(path, "late.csv", options).column("betrag")
    assert str(column.type) == "double" and column[-1].as_py() == 1234.56


def test_time_column_errors_name_the_formats(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id;Datum\n1;31.12.2025\n2;2025-12-30\n3;gestern\n")
    opts = ReadOptions(delimiter=";", date_formats=("%d.%m.%Y",))
    with pytest.raises(DataError) as err:
        read_file(path, "t.csv", opts, time_column="Datum")
    msg = str(err.value)
    assert "'Datum' should hold timestamps" in msg and "1 value(s)" in msg
    assert "'%d.%m.%Y'" in msg and "'gestern'" in msg and "--date-format" in msg

    path.write_text("id;Datum\n1;31.12.2025\n2;2025-12-30\n3;12/29/2025\n")
    opts = ReadOptions(delimiter=";", date_formats=("%d.%m.%Y", "%m/%d/%Y"))
    days = read_file(path, "t.csv", opts, time_column="Datum").column("Datum").to_pylist()
    assert [d.day for d in days] == [31, 30, 29]

    path.write_text("id;Datum\n1;NA\n2;\n")
    with pytest.raises(DataError, match="holds no values at all"):
        read_file(path, "t.csv", ReadOptions(delimiter=";"), time_column="Datum")
    path.write_text("id;Datum\n1;17\n2;18\n")
    with pytest.raises(DataError, match="holds integer values"):
        read_file(path, "t.csv", ReadOptions(delimiter=";"), time_column="Datum")


def test_to_times_parses_one_format_or_says_why_not():
    import pandas as pd

    days = to_times(pd.Series(["31.12.2025", "2025-12-30"]), "Datum", "kunden.csv")
    assert list(days.dt.day) == [31, 30]
    # Day-first and month-first are never mixed silently.
    with pytest.raises(DataError, match="should hold timestamps.*'13/31/2025'"):
        to_times(pd.Series(["31/12/2025", "13/31/2025"]), "Datum", "kunden.csv")


def test_contract_inference_copes_with_the_messy_file(tmp_path):
    import duckdb

    from mlops_console.data.profile import profile_table

    path = write_messy_csv(tmp_path / "kunden.csv", new_category=False)
    table = read_file(path, "kunden.csv", time_column="Datum")
    con = duckdb.connect()
    con.register("data", table)
    profile = profile_table(con, "data", table.schema)
    inferred = contracts.infer("kunden", table, profile, "Datum", ["Kunden.Nr"])
    assert inferred.columns["Region"].categories == sorted(REGIONS)
    assert inferred.columns["Gekündigt"].categories == ["ja", "nein"]  # 5% "ja" is a class
    assert inferred.columns["Kunden.Nr"].min is None  # new customers are no range violation
    assert inferred.columns["Umsatz €"].type == "float" and inferred.columns["Umsatz €"].nullable
    again = contracts.Contract(**tomllib.loads(dumps(inferred)))
    assert again == inferred
    assert all(r.passed for r in contracts.check(con, "data", table.schema, again))

    month2 = write_messy_csv(tmp_path / "m2.csv", month=2, new_category=True)
    t2 = read_file(month2, "m2.csv", time_column="Datum")
    con.register("m2", t2)
    failed = [r for r in contracts.check(con, "m2", t2.schema, again) if not r.passed]
    assert [(r.rule, r.column) for r in failed] == [("categories", "Region")]
    assert failed[0].examples == [NEW_REGION]


def _wide(columns: int, rows: int):
    import pyarrow as pa

    data = {}
    for i in range(columns):
        if i % 4 == 0:
            data[f"s{i}"] = pa.array(
                [None if r % 5 == 0 else f"v{(r * i) % 7}" for r in range(rows)]
            )
        elif i % 4 == 1:
            data[f"i{i}"] = pa.array([r * i % 11 for r in range(rows)], pa.int64())
        elif i % 4 == 2:
            data[f"f{i}"] = pa.array(
                [float("inf") if r == 3 else (None if r == 1 else r / (i + 1)) for r in range(rows)]
            )
        else:
            data[f"n{i}"] = pa.nulls(rows)
    return pa.table(data)


def test_wide_profile_in_batches_is_the_per_column_profile(monkeypatch):
    import duckdb

    from mlops_console.data import profile as profiles
    from mlops_console.data import types

    table = _wide(40, 30)
    con = duckdb.connect()
    con.register("data", table)
    whole = profiles.profile_table(con, "data", table.schema)
    monkeypatch.setattr(types, "BATCH", 7)  # copies of 7 columns, as for a wide table
    monkeypatch.setattr(profiles, "BATCH", 7)
    batched = profiles.profile_table(con, "data", table.schema)
    assert json.dumps(batched) == json.dumps(whole)  # (NaN edges: inf in a column)
    assert list(whole["columns"]) == table.schema.names

    s = whole["columns"]["s4"]
    values = [v for v in table.column("s4").to_pylist() if v is not None]
    assert s["count"] == len(values) and s["nulls"] == 30 - len(values)
    assert s["distinct"] == len(set(values)) and sum(t["count"] for t in s["top"]) == len(values)
    f = whole["columns"]["f2"]
    assert f["non_finite"] == 1 and f["max"] == float("inf") and f["nulls"] == 1
    i = whole["columns"]["i1"]
    assert i["min"] == 0 and i["max"] == 10 and sum(i["histogram"]["counts"]) == 30
    assert whole["columns"]["n3"] == {"type": "null", "count": 0, "nulls": 30, "distinct": 0}

    # The contract is checked in the same batches, with the same results.
    contract = contracts.infer("wide", table, whole, None, [])
    contract.columns["i5"].max = 3
    contract.columns["s0"].nullable = False
    contract.columns["s4"].categories = ["v0", "v1"]
    results = [r.to_dict() for r in contracts.check(con, "data", table.schema, contract)]
    monkeypatch.setattr(types, "BATCH", 1000)  # no copies
    assert [r.to_dict() for r in contracts.check(con, "data", table.schema, contract)] == results
    failed = {(r["rule"], r["column"]): r for r in results if not r["passed"]}
    assert list(failed) == [("not_null", "s0"), ("categories", "s4"), ("range", "i5")]
    assert failed["not_null", "s0"]["examples"] == [1, 6, 11, 16, 21]
    assert failed["range", "i5"]["examples"] == [4, 5, 6, 7, 8]
    assert "(data: 0 .. 10)" in failed["range", "i5"]["detail"]
    seen = [v for v in table.column("s4").to_pylist() if v not in (None, "v0", "v1")]
    assert (
        failed["categories", "s4"]["examples"]
        == sorted(set(seen), key=lambda v: (-seen.count(v), v))[:5]
    )


def test_sniffing_a_plain_file_proposes_nothing_unusual(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text(
        "id,when,amount,version,us_date,note\n"
        + "".join(
            f"{i},2025-01-0{1 + i % 9}T00:00:00,{i}.5,1.{i}.3,12/3{i % 2}/2025,-\n"
            for i in range(20)
        )
    )
    stored = choose(plain, {})
    # '-' in a text column is a value, not a missing one; 1.2.3 is no date.
    assert stored == {
        "delimiter": ",",
        "date_formats": ["%m/%d/%Y"],
        "sniffed": ["delimiter", "date_formats"],
    }
    types = read_file(plain, "plain.csv", ReadOptions.from_dict(stored)).schema.types
    assert [str(t) for t in types] == [
        "int64",
        "timestamp[s]",
        "double",
        "string",
        "timestamp[s]",
        "string",
    ]
