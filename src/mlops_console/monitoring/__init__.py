"""Monitoring: prediction-log collection, drift, stability, decay, performance, alerts."""
