"""Edge fleets over SSH: keep devices on the right model version over bad links."""

__version__ = "0.1.0"
