"""Experiment tracking: runs, params, metrics, artifacts and lineage."""
