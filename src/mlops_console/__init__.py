"""mlops-console: a local-first MLOps appliance.

The public Python API is :class:`mlops_console.workspace.Workspace`.
"""

__version__ = "0.1.0"

__all__ = ["Workspace", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import mlops_console` stays cheap for the CLI and the servers.
    if name == "Workspace":
        from mlops_console.workspace import Workspace

        return Workspace
    raise AttributeError(name)
