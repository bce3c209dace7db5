"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class EdgectlError(Exception):
    """An error the user can act on; printed without a traceback."""

    exit_code = 1


class ConfigError(EdgectlError):
    """A bad config file, environment variable or flag value; names the key."""

    exit_code = 2
