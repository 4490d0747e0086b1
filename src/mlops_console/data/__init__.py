"""Versioned datasets: ingestion, contracts, profiles, immutable Parquet snapshots."""
