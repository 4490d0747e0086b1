"""Deploy targets (local process, docker) and rollout strategies."""
