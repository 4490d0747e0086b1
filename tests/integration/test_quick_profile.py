"""The quick training profile (issue 17): `mlops run --quick` and `[search] profile`."""

from __future__ import annotations

import json
import re

import pytest
from tests.conftest import run_cli

from mlops_console.pipeline_spec import QUICK, PipelineSpec, effective_spec


def test_quick_caps_are_applied_once_and_keep_lower_values():
    spec = PipelineSpec.model_validate(
        {
            "name": "p",
            "data": {"path": "d.csv", "target": "y"},
            "search": {
                "method": "random",
                "space": {"C": {"low": 0.1, "high": 1.0}},
                "candidates": 50,
                "cv_folds": 5,
                "max_rows": 1000,
                "profile": "quick",
            },
        }
    )
    quick = effective_spec(spec)
    assert quick.search.candidates == QUICK["candidates"]
    assert quick.search.cv_folds == QUICK["cv_folds"]
    assert quick.search.max_rows == 1000  # already below the cap: kept
    assert quick.checks.importance_rows == QUICK["importance_rows"]
    assert effective_spec(quick) == quick
    full = spec.model_copy(update={"search": spec.search.model_copy(update={"profile": "full"})})
    assert effective_spec(full).search.candidates == 50


@pytest.mark.slow  # a real training run: a few seconds idle, much more on a loaded machine
def test_run_quick_trains_fewer_candidates_on_capped_rows_and_says_so(tmp_path):
    ws = tmp_path / "ws"
    run_cli("init", "--sample", str(ws), check=True)
    proc = run_cli("-w", str(ws), "run", "churn", "--quick", check=True, timeout=280)
    assert "(quick profile)" in proc.stderr
    assert f"on {QUICK['max_rows']} of " in proc.stderr
    assert len(re.findall(r"candidate \d+/\d+:", proc.stderr)) == QUICK["candidates"]
    runs = json.loads(run_cli("-w", str(ws), "runs", "list", "--json", check=True).stdout)
    run_id = runs["runs"][0]["id"]
    shown = json.loads(run_cli("-w", str(ws), "runs", "show", run_id, "--json", check=True).stdout)
    assert shown["tags"]["profile"] == "quick"
    assert shown["params"]["search.profile"] == "quick"
    assert shown["params"]["search.candidates"] == str(QUICK["candidates"])
    assert shown["params"]["search.max_rows"] == str(QUICK["max_rows"])
    text = run_cli("-w", str(ws), "runs", "show", run_id, check=True).stdout
    assert "search.profile" in text and "quick" in text
