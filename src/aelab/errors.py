"""The errors aelab raises for bad input. Each message names the problem and the fix."""

from aelab import AelabError


class DataError(AelabError):
    """A dataset cannot be found, read or trusted (missing, truncated, corrupt, wrong hash)."""


class ConfigError(AelabError):
    """A configuration or argument is invalid (unknown key, impossible shape, bad value)."""


def warn(message: str) -> None:
    """Tell the user something they must know but that does not stop the run (one line on stderr)."""
    import sys

    print(f"aelab: warning: {message}", file=sys.stderr, flush=True)
