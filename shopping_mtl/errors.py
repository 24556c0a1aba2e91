"""Errors a user can act on. The CLI prints their message and exits non-zero, with no traceback."""


class ShoppingMtlError(Exception):
    """Base class: a problem with the user's input, config or environment, not a bug."""


class ConfigError(ShoppingMtlError):
    """A configuration or spec value is unknown, missing or out of range."""


class DataError(ShoppingMtlError):
    """An input file is missing, empty or holds malformed rows."""
