"""Feature views over datasets: point-in-time correct training frames and an online store."""
