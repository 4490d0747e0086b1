"""The plugin's hooks (entry point `kubernetes` in group `mlops_console`)."""

from __future__ import annotations

from mlops_console.plugins import hookimpl


@hookimpl
def mlops_deploy_targets():
    from mlops_kubernetes.target import KubernetesTarget  # yaml and kubectl only when used

    return {"kubernetes": KubernetesTarget}
