"""Who is acting: the name recorded with runs, versions, alias moves and acknowledgements."""

from __future__ import annotations


def current_user() -> str:
    """The login name this process runs as; '' when the system has none for its uid
    (a container started with an arbitrary uid, say)."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # getpass raises KeyError or OSError, varying by version
        return ""
