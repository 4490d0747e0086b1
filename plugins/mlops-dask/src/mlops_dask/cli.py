"""`mlops compute status`: the cluster [compute] names, or why it cannot be reached."""

from __future__ import annotations

import click

from mlops_console.cli.output import Output, output_options, pass_workspace, table
from mlops_console.errors import MlopsError


class ComputeUnreachable(MlopsError):
    """The [compute] scheduler cannot be reached (exit 1, with the reason)."""


@click.group()
def compute() -> None:
    """Where pipeline searches run ([compute] in mlops.toml; mlops-dask plugin)."""


@compute.command("status")
@click.option("--scheduler", metavar="ADDRESS", help="Ask this scheduler instead of [compute].")
@output_options
@pass_workspace
def status(ws, scheduler: str | None) -> Output:
    """Show the cluster's workers, threads, memory and whether their versions match."""
    from mlops_console.training.search import ComputeUnavailable
    from mlops_dask.backend import cluster_summary, connect
    from mlops_dask.versions import local_versions, version_skew, worker_versions

    settings = ws.config.compute.model_dump()
    if scheduler:
        settings["scheduler"] = scheduler
    if not settings.get("scheduler"):
        data = {"backend": settings["backend"], "reachable": False, "reason": "no scheduler"}
        return Output(
            data,
            lambda: click.echo(
                f'[compute].backend is "{settings["backend"]}" and no scheduler is set: '
                'searches run here. Set [compute] backend = "dask" and scheduler = '
                '"tcp://HOST:8786" in mlops.toml to use a cluster.'
            ),
        )
    try:
        client, cluster = connect(settings)
    except ComputeUnavailable as exc:
        raise ComputeUnreachable(f"Cannot use the cluster: {exc}.") from None
    try:
        summary = cluster_summary(client)
        versions = worker_versions(client) if summary["workers"] else {}
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    local = local_versions()
    skew = version_skew(local, versions)
    data = {
        "backend": settings["backend"],
        "reachable": True,
        **summary,
        "worker_versions": versions,
        "local_versions": local,
        "version_skew": skew,
    }

    def human() -> None:
        click.echo(
            f"Scheduler {summary['scheduler']}: {summary['workers']} worker(s), "
            f"{summary['threads']} thread(s), {summary['memory_bytes'] / 2**30:.1f} GiB"
            + ("" if settings["backend"] == "dask" else f' (backend is "{settings["backend"]}")')
        )
        table(
            ["worker", "threads", "memory GiB", "scikit-learn", "numpy", "joblib"],
            [
                (
                    addr,
                    w["threads"],
                    f"{w['memory_bytes'] / 2**30:.1f}",
                    versions.get(addr, {}).get("scikit-learn"),
                    versions.get(addr, {}).get("numpy"),
                    versions.get(addr, {}).get("joblib"),
                )
                for addr, w in summary["worker_list"].items()
            ],
        )
        if skew:
            click.echo("Version skew (a search would be refused): " + "; ".join(skew))
        else:
            click.echo(
                f"Versions match this machine (scikit-learn {local['scikit-learn']}, "
                f"numpy {local['numpy']}, joblib {local['joblib']})."
            )

    return Output(data, human)
