"""Reading the project's YAML files (configs, dataset specs, studies) with one error contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shopping_mtl.errors import ConfigError


def read_yaml(path: Path) -> Any:
    """The parsed content of `path` (None for an empty file).

    Raises:
        ConfigError: the file is not valid YAML or not UTF-8 text, naming the file.
    """
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text: {err}") from None
