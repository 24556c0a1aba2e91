"""A run folder belongs to one configuration: the single home of "may this run use this folder".

`claim(run_dir, config, overwrite)` is called once when a run starts (`pipeline.prepare_state`),
before its `config.yaml` is written:

- a folder without `config.yaml` is new: the run takes it;
- a folder whose `config.yaml` holds the same configuration (`differences` is empty) is taken
  again: an interrupted run resumes its fits from `.backup/` (the same seed gives the same
  figures), a finished one is run again and reproduces its files, its exports published as the
  next version;
- any other configuration is refused (`RunFolderConflict`, naming the first differing keys), so
  neither `config.yaml`, `metrics.json` nor a backup of another configuration is touched; with
  `overwrite` the old run's files are removed instead (`clear`), the published exports and the
  workers' folders kept.

Settings that may differ between runs of one folder (`HARMLESS`): `run_dir` (the folder is the
same however it is spelled) and `tracking.*` (whether and where the run is recorded changes no
file of the run). Everything else in the resolved configuration, `stages` included, must match.

A run that claimed its folder removes the old run's figures (`metrics.json`, `run_info.json`,
the folds' too) and the `COMPLETE` marker at once; `mark_complete` writes the marker last, when
every file of the run is in place. A folder without `COMPLETE` holds an unfinished run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Mapping

import yaml

from shopping_mtl.config import config_from_dict
from shopping_mtl.errors import ConfigError, RunFolderConflict
from shopping_mtl.run_state import write_atomic

CONFIG_FILE = "config.yaml"
COMPLETE_FILE = "COMPLETE"
# What a run's figures are: removed when a run starts, so an unfinished run shows none.
FIGURE_FILES = ("metrics.json", "run_info.json")
# Top-level keys that may differ between runs of one folder (see the module docstring).
HARMLESS = ("run_dir", "tracking")
# Kept by `clear`: published export versions (a model server may be serving them; the next run
# publishes the next version) and the workers' own folders (each worker claims its own).
KEPT_BY_CLEAR = ("export", "workers")
# Keys a resolved config.yaml always has: a config.yaml without them is not a run's.
RUN_CONFIG_KEYS = ("run_dir", "seed", "stages", "data")
SHOWN_DIFFERENCES = 5

HOST = socket.gethostname()
# A stand-in for this process's start (its first import of the package follows it closely):
# a temporary folder older than this, written by a process that left no pid, has no writer.
PROCESS_START = time.time()


def process_gone(host: str | None, pid: int | str | None) -> bool:
    """True only when process `pid` of `host` is known to have ended: `host` is this machine
    and `os.kill(pid, 0)` finds no such process. Another host, no pid or this very process
    count as not gone (nothing can be told, or it is running)."""
    if host != HOST:
        return False
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, owned by another user
        return False
    return False


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING = _Missing()


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _normalized(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` as the current code reads it (a key an older config.yaml lacks takes its
    default), or as it is when the code no longer reads it; harmless keys left out."""
    try:
        config = config_from_dict(config).to_dict()
    except (ConfigError, TypeError, ValueError):
        pass
    # Through YAML, as config.yaml holds it: tuples and lists, ints and floats compare alike.
    plain = yaml.safe_load(yaml.safe_dump(dict(config), sort_keys=False)) or {}
    return {k: v for k, v in _flat(plain).items() if k.split(".", 1)[0] not in HARMLESS}


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """The dotted keys whose values differ between two resolved configurations, as
    (key, old value, new value), in the new configuration's key order (keys only the old one
    has last; a missing value is `MISSING`); the `HARMLESS` keys are not compared.
    Empty: the same configuration."""
    old_flat, new_flat = _normalized(old), _normalized(new)
    keys = list(new_flat) + [k for k in old_flat if k not in new_flat]
    return [(k, old_flat.get(k, MISSING), new_flat.get(k, MISSING)) for k in keys
            if old_flat.get(k, MISSING) != new_flat.get(k, MISSING)]


def _show(value: Any) -> str:
    return repr(value) if value is MISSING else json.dumps(value, default=str)


def describe(found: list[tuple[str, Any, Any]], limit: int = SHOWN_DIFFERENCES) -> str:
    """`seed: 42 -> 7; retrieval.epochs: 2 -> 1 (and 3 more)`: the first `limit` differences."""
    text = "; ".join(f"{key}: {_show(old)} -> {_show(new)}" for key, old, new in found[:limit])
    return text + (f" (and {len(found) - limit} more)" if len(found) > limit else "")


def backup_folders(run_dir: Path) -> list[Path]:
    """The `.backup` folders of the run folder and of its folds (`folds/<name>/.backup`)."""
    run_dir = Path(run_dir)
    return [p for p in [run_dir / ".backup", *sorted(run_dir.glob("folds/*/.backup"))] if p.is_dir()]


def resumable_backups(run_dir: Path) -> list[Path]:
    """Each fit's backup folder (`.backup/<model>`, the folds' too) that holds a file: what a
    run into this folder resumes from. Empty folders resume nothing."""
    found = []
    for backups in backup_folders(run_dir):
        for model in sorted(p for p in backups.iterdir() if p.is_dir()):
            if any(f.is_file() for f in model.rglob("*")):
                found.append(model)
    return found


def read_config(run_dir: Path) -> dict | None:
    """The folder's config.yaml as a mapping; None when there is none.

    Raises:
        RunFolderConflict: it exists but is not a run's resolved configuration.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raw = err
    if not isinstance(raw, Mapping) or not all(k in raw for k in RUN_CONFIG_KEYS):
        raise RunFolderConflict(
            f"{path} is not a run's configuration (a run writes its whole resolved config there), so "
            f"{run_dir} is not a run folder this run can take: choose another --run-dir")
    return dict(raw)


def claim(run_dir: Path, config: Mapping[str, Any], overwrite: bool = False) -> None:
    """Make the existing folder `run_dir` ready for a run of `config` (a resolved config as
    `Config.to_dict()` gives it), before its config.yaml is written (see the module docstring).

    Afterwards the folder holds no `COMPLETE` marker and no figures (`FIGURE_FILES`, its folds'
    too); with `overwrite` and an earlier run's config.yaml, nothing of the earlier run but
    `KEPT_BY_CLEAR`.

    Raises:
        RunFolderConflict: the folder holds another configuration's run and `overwrite` is off,
            or a config.yaml that is no run's (whatever `overwrite` says).
    """
    run_dir = Path(run_dir)
    old = read_config(run_dir)
    if old is not None and overwrite:
        clear(run_dir)
    elif old is not None:
        found = differences(old, config)
        if found:
            resumable = ", ".join(str(p.relative_to(run_dir)) for p in resumable_backups(run_dir))
            backup = (f" It holds an interrupted run's backup ({resumable}), which resumes only under the "
                      "configuration it was made with." if resumable else "")
            raise RunFolderConflict(
                f"run folder {run_dir} holds a run of another configuration (its config.yaml differs in "
                f"{describe(found)}).{backup} A run folder holds one configuration's run: use a new --run-dir, "
                f"or pass --overwrite to replace that run (its published exports stay; this run publishes the "
                f"next version)")
    mark_started(run_dir)


def clear(run_dir: Path) -> list[str]:
    """Remove every file and folder of `run_dir` but `KEPT_BY_CLEAR`. Returns the names removed."""
    removed = []
    for entry in sorted(Path(run_dir).iterdir()):
        if entry.name in KEPT_BY_CLEAR:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


def mark_started(run_dir: Path) -> None:
    """Remove the `COMPLETE` marker and the figures of an earlier run (its folds' too): until
    this run completes, nothing in the folder passes for its results."""
    run_dir = Path(run_dir)
    (run_dir / COMPLETE_FILE).unlink(missing_ok=True)  # first: the folder is unfinished from here
    for folder in [run_dir, *sorted(run_dir.glob("folds/*"))]:
        for name in FIGURE_FILES:
            (folder / name).unlink(missing_ok=True)


def mark_complete(run_dir: Path, info: Mapping[str, Any] | None = None) -> Path:
    """Write `COMPLETE` (when, and the run's exports from `info`): every file of the run is in
    place. Call it last."""
    info = info or {}
    record = {"completed": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "exports": info.get("exports", {}), "export_version": info.get("export_version")}
    path = Path(run_dir) / COMPLETE_FILE
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


def is_complete(run_dir: Path) -> bool:
    """Whether the run in `run_dir` finished (its `COMPLETE` marker is there)."""
    return (Path(run_dir) / COMPLETE_FILE).is_file()
