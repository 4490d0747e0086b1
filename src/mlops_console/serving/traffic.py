"""Which versions take the traffic: the primary, a canary for a share, a shadow beside.

Every change is one reference assignment, so a request that picked a version finishes on
it; each change returns the versions it took out of service, for the server to retire
once their queued requests are done.
"""

from __future__ import annotations

import random

from mlops_console.serving.model import ServedModel

ROLES = ("primary", "canary", "shadow")


class TrafficError(Exception):
    """A change the current traffic does not allow (there is no canary to promote)."""


class Traffic:
    def __init__(self, primary: ServedModel):
        self.primary = primary
        self.canary: ServedModel | None = None
        self.canary_percent = 0.0
        self.shadow: ServedModel | None = None
        self.swaps = 0  # versions loaded since the server started

    def pick(self) -> tuple[ServedModel, str]:
        """The version (and its role) that answers the next scoring request."""
        canary = self.canary
        if canary is not None and random.random() * 100 < self.canary_percent:
            return canary, "canary"
        return self.primary, "primary"

    def served(self) -> list[ServedModel]:
        return [m for m in (self.primary, self.canary, self.shadow) if m is not None]

    def role_of_version(self, version: str) -> tuple[ServedModel, str] | None:
        """The primary or canary holding `version`, and its role; None if neither does."""
        for model, role in ((self.primary, "primary"), (self.canary, "canary")):
            if model is not None and str(model.version) == str(version):
                return model, role
        return None

    def swap(self, new: ServedModel, role: str, percent: float = 0.0) -> ServedModel | None:
        """Put `new` in `role` (a canary takes `percent` of the requests); the version it
        replaced, if any."""
        if role not in ROLES:
            raise TrafficError(f"role must be primary, canary or shadow, not {role!r}.")
        old: ServedModel | None
        if role == "primary":
            old, self.primary = self.primary, new
        elif role == "canary":
            old, self.canary = self.canary, new
            self.canary_percent = percent
        else:
            old, self.shadow = self.shadow, new
        self.swaps += 1
        return old

    def promote(self) -> ServedModel:
        """Make the canary the primary; the former primary."""
        if self.canary is None:
            raise TrafficError("There is no canary to promote.")
        old, self.primary = self.primary, self.canary
        self.canary, self.canary_percent = None, 0.0
        return old

    def rollback(self) -> list[ServedModel]:
        """Serve the primary only; the canary and the shadow it dropped."""
        if self.canary is None and self.shadow is None:
            raise TrafficError("There is no canary or shadow to roll back.")
        dropped = [m for m in (self.canary, self.shadow) if m is not None]
        self.canary, self.canary_percent, self.shadow = None, 0.0, None
        return dropped
