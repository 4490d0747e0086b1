"""A Kubernetes deploy target for mlops-console (plain manifests or KServe), through kubectl."""
