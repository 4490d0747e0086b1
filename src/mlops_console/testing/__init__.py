"""Model checks and promotion gates."""
