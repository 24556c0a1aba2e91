"""Errors a user can act on. The CLI prints their message and exits non-zero, with no traceback."""


class ShoppingMtlError(Exception):
    """Base class: a problem with the user's input, config or environment, not a bug."""


class ConfigError(ShoppingMtlError):
    """A configuration or spec value is unknown, missing or out of range."""


class DataError(ShoppingMtlError):
    """An input file is missing, empty or holds malformed rows."""


class TrainingDiverged(ShoppingMtlError):
    """A fit's loss turned non-finite or grew far past its first epoch's: the settings that
    set the step size are out of their useful range. The message names them."""


class RunFolderConflict(ShoppingMtlError):
    """A run folder holds another configuration's run (or is no run folder): the run would mix
    its files, figures and backups with that one's. The message names the folder, the first
    differing settings and what to do (a new --run-dir, or --overwrite)."""
