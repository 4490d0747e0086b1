"""A Ray Serve deploy target for mlops-console."""
