"""The model registry: models, versions, aliases with history, model cards."""
