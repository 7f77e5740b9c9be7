"""User-facing errors: the CLI prints their one-line message and exits with status 2."""


class JaxcptError(Exception):
    """Bad input (missing/mis-shaped tensor, unknown model type, unusable path, ...)."""
