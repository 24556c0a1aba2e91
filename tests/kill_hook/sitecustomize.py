"""Loaded by a training subprocess whose PYTHONPATH starts with this folder (Python imports
`sitecustomize` at start-up): the process SIGKILLs itself at the exact point named by
SHOPPING_MTL_KILL_AFTER, so a test kills a run there however fast or slow the machine is:

- "<model>:<epoch>" (epochs counted from 1): right after Keras has backed up that epoch of the
  fit whose backup folder is named <model> (retrieval, ranker, ranker_click, ...);
- "stage:<name>": right after stage <name> returned, before the pipeline records it (for the
  export stage: every model published, metrics.json and COMPLETE not yet written).

A real SIGKILL: nothing in the process gets to clean up."""

import os
import signal

_model, _, _point = os.environ["SHOPPING_MTL_KILL_AFTER"].partition(":")

import shopping_mtl  # noqa: E402,F401  (sets the environment TensorFlow reads at import)
import tensorflow as tf  # noqa: E402


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


if _model == "stage":
    from shopping_mtl import pipeline  # noqa: E402

    _function, _field = pipeline.STAGE_FUNCTIONS[_point]

    def _run_then_kill(state):
        _function(state)
        _kill()

    pipeline.STAGE_FUNCTIONS[_point] = (_run_then_kill, _field)
else:
    _Backup = tf.keras.callbacks.BackupAndRestore

    class _BackupThenKill(_Backup):
        def __init__(self, backup_dir, *args, **kwargs):
            super().__init__(backup_dir, *args, **kwargs)
            self._kills = os.path.basename(os.path.dirname(os.path.normpath(backup_dir))) == _model

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if self._kills and epoch + 1 == int(_point):
                _kill()

    tf.keras.callbacks.BackupAndRestore = _BackupThenKill
