"""The plugin's hooks (entry point `ray` in group `mlops_console`)."""

from __future__ import annotations

from mlops_console.plugins import hookimpl


@hookimpl
def mlops_deploy_targets():
    from mlops_ray.target import RayTarget  # httpx only: Ray itself runs on the cluster

    return {"ray": RayTarget}
