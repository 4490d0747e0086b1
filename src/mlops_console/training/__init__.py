"""Training: build, fit and evaluate a pipeline spec, track it and register the model."""
