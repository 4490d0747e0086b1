"""A chain's canary rollout, as the pipeline's `[deploy]` asks: one step or several
(e.g. 10 -> 50 -> 100 percent), each judged on its own traffic before the next.

A step passes once the canary has answered `min_requests` requests, has served for at
least `min_minutes`, and stayed within `max_error_rate` and `max_p99_ms`; it fails at
once on a breach, and after `canary_minutes` without enough requests. The last step
passed promotes the canary; any failure (or a cancel, or an error) rolls it back, so
nothing half-rolled-out is left serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def canary_rollout(
    ws,
    name: str,
    ref: str,
    deploy,
    say: Callable[[str], None],
    check_cancel: Callable[[], None],
    poll_seconds: float = 0.5,
) -> str:
    """Roll `ref` out on deployment `name`; returns 'promote' or 'rollback'."""
    steps = deploy.steps
    try:
        for i, percent in enumerate(steps, 1):
            # every load resets the server's windows: each step is judged on its own traffic
            ws.deployments.deploy(ref, name=name, strategy="canary", canary_percent=percent)
            say(
                f"{name}: canary {ref} at {percent:g}% (step {i} of {len(steps)}): needs "
                f"{deploy.min_requests} requests and {deploy.min_minutes:g} min within "
                f"{deploy.canary_minutes:g} min, errors <= {deploy.max_error_rate:g}, "
                f"p99 <= {deploy.max_p99_ms:g} ms"
            )
            if not _step(ws, name, percent, deploy, say, check_cancel, poll_seconds):
                return "rollback"
        shown = " -> ".join(f"{p:g}%" for p in steps)
        ws.deployments.promote(name, reason=f"canary healthy at every step ({shown})")
        return "promote"
    except BaseException as exc:  # cancelled, or the target failed: take the canary out
        try:
            if ws.deployments.get(name).canary_version is not None:
                ws.deployments.rollback(name, reason=f"the rollout stopped: {exc}")
                say(f"{name}: canary rolled back ({exc})")
        except Exception as inner:
            log.warning("%s: the canary could not be rolled back: %s", name, inner)
            say(f"{name}: the canary could not be rolled back: {inner}")
        raise


def _step(ws, name, percent, deploy, say, check_cancel, poll_seconds) -> bool:
    started = time.time()
    earliest = started + deploy.min_minutes * 60
    deadline = started + deploy.canary_minutes * 60
    last = None
    while True:
        v = ws.deployments.judge_canary(
            name,
            max_error_rate=deploy.max_error_rate,
            max_p99_ms=deploy.max_p99_ms,
            min_requests=deploy.min_requests,
            promote=False,
        )
        line = (
            f"judge at {percent:g}%: {v.decision} ({v.requests} canary requests, "
            f"{v.errors} errors, {v.client_errors} refused, p99 "
            + (f"{v.p99_ms:.1f} ms)" if v.p99_ms is not None else "n/a)")
        )
        if line != last:  # one line per change, not one per poll
            say(line)
            last = line
        if v.decision == "rollback":  # judge_canary rolled it back
            return False
        now = time.time()
        if v.decision == "healthy" and now >= earliest:
            return True
        if now >= deadline:
            ws.deployments.rollback(
                name,
                reason=f"canary at {percent:g}% saw {v.requests} of {deploy.min_requests} "
                f"requests in {deploy.canary_minutes:g} min",
            )
            say(f"judge at {percent:g}%: rollback (too few requests in its window)")
            return False
        check_cancel()
        time.sleep(poll_seconds)
