"""A real user's first export gets in with `mlops data add` (issue 19), and the next
months' files are read the same way."""

import json
import tomllib

import pandas as pd
from tests.conftest import run_cli
from tests.messy_data import HEADER, NEW_REGION, write_messy_csv

PIPELINE = """
name = "kunden"
register_as = "kunden"
task = "classification"
seed = 1
[data]
dataset = "kunden"
target = "Gekündigt"
time_column = "Datum"
entity_column = "Kunden.Nr"
[model]
estimator = "sklearn.ensemble.HistGradientBoostingClassifier"
params = { max_iter = 50 }
[search]
method = "none"
"""


def test_messy_export_is_sniffed_ingested_and_next_months_follow(tmp_path):
    ws = tmp_path / "ws"
    run_cli("init", str(ws), check=True)
    write_messy_csv(ws / "data" / "kunden.csv")

    def mlops(*args, check=True):
        return run_cli("-w", str(ws), *args, check=check)

    add = mlops("data", "add", "kunden", "data/kunden.csv", "--timestamp", "Datum")
    assert (
        "read with delimiter ';', decimal ',', thousands '.', NA 'NA', 'n/a', '-', "
        "encoding cp1252, dates '%d.%m.%Y' (sniffed; --delimiter/--decimal/--thousands/--na/"
        "--encoding/--date-format override)"
    ) in add.stdout
    assert "kunden v1: 2000 rows accepted" in add.stdout

    shown = json.loads(mlops("data", "show", "kunden", "--json").stdout)
    assert shown["dataset"]["read_options"]["decimal"] == ","
    types = {c: p["type"] for c, p in shown["profile"]["columns"].items()}
    assert list(types) == HEADER
    assert types["Umsatz €"] == "float" and types["Rabatt %"] == "float"
    assert types["Alter (Jahre)"] == "integer" and types["Datum"] == "timestamp"
    assert shown["profile"]["columns"]["Umsatz €"]["nulls"] > 0  # 'n/a'
    assert "read with  delimiter ';'" in mlops("data", "show", "kunden").stdout

    contract = tomllib.loads((ws / "contracts" / "kunden.toml").read_text())
    assert list(contract["columns"]) == HEADER
    assert contract["columns"]["Gekündigt"]["categories"] == ["ja", "nein"]

    write_messy_csv(ws / "data" / "kunden.csv", month=2)  # next month's export, same name
    assert "kunden v2: 2000 rows accepted" in mlops("data", "ingest", "kunden").stdout

    # trained on it: odd column names, the rare class measured as the positive one
    (ws / "pipelines" / "kunden.toml").write_text(PIPELINE)
    run = mlops("run", "kunden")
    assert "positive class 'ja', the minority" in run.stderr + run.stdout
    assert "Registered kunden/1" in run.stdout and "ONNX: included" in run.stdout
    mlops("predict", "kunden/1", "-i", "kunden", "-o", str(tmp_path / "scored.csv"))
    scored = pd.read_csv(tmp_path / "scored.csv")
    by_class = scored.groupby("Gekündigt")["probability"].mean()
    assert by_class["ja"] > by_class["nein"]  # the probability is that of 'ja'

    write_messy_csv(ws / "data" / "kunden.csv", month=3, new_category=True)
    third = mlops("data", "ingest", "kunden", check=False)
    assert third.returncode == 1 and "v3 is QUARANTINED" in third.stdout
    assert NEW_REGION in third.stdout


def test_options_given_on_the_command_line_and_a_time_column_without_times(tmp_path):
    ws = tmp_path / "ws"
    run_cli("init", str(ws), check=True)
    write_messy_csv(ws / "data" / "kunden.csv", rows=300, encoding="utf-8")

    def mlops(*args, check=True):
        return run_cli("-w", str(ws), *args, check=check)

    flags = ["--delimiter", ";", "--decimal", ",", "--thousands", ".", "--na", "-"]
    flags += ["--encoding", "utf-8", "--date-format", "%d.%m.%Y", "--date-format", "%Y-%m-%d"]
    add = mlops("data", "add", "given", "data/kunden.csv", "--timestamp", "Datum", *flags)
    assert (
        "read with delimiter ';', decimal ',', thousands '.', NA '-', dates '%d.%m.%Y', "
        "'%Y-%m-%d' (as given)"
    ) in add.stdout
    assert "given v1: 300 rows accepted" in add.stdout

    wrong = mlops("data", "add", "wrong", "data/kunden.csv", "--timestamp", "Region", check=False)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "the time column 'Region' should hold timestamps" in wrong.stderr
    assert "'%d.%m.%Y'" in wrong.stderr and "Is it the right column?" in wrong.stderr
    assert "wrong" not in mlops("data", "list").stdout  # nothing stays registered
