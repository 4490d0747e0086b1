"""How a chain that raised ends: the retry decision reads the outcome, never the text."""

from __future__ import annotations

from mlops_console.automation.chain import ChainStopped, outcome_of
from mlops_console.automation.jobs import Outcome
from mlops_console.deploy.base import DeployError, DeployRefused
from mlops_console.errors import MlopsError


def test_a_deploy_its_targets_gates_refused_is_not_retried():
    # a fleet rollout aborted by its device gates: the same version fails again
    refused = outcome_of(DeployRefused("m: rollout r1 of m/3 aborted: 1 of 1 failed"))
    assert refused is Outcome.GATES_FAILED and not refused.retryable
    # a server that would not start this time, or anything unknown, may pass later
    assert outcome_of(DeployError("port in use")) is Outcome.ERROR
    assert outcome_of(MlopsError("x")).retryable and outcome_of(KeyError("y")).retryable
    assert outcome_of(ChainStopped("bad data", Outcome.QUARANTINED)) is Outcome.QUARANTINED
