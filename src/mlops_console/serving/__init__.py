"""The model server: MLflow-compatible scoring and the Open Inference Protocol v2.

Importable without the registry's database, scikit-learn or pandas (they load only for
the scikit-learn runtime), because it ships alone into containers and edge devices.
"""
