"""Loaded by a training subprocess whose PYTHONPATH starts with this folder (Python imports
`sitecustomize` at start-up): the process SIGKILLs itself right after Keras has backed up the
epoch named by SHOPPING_MTL_KILL_AFTER ("<model>:<epoch>", epochs counted from 1), so a test
kills a run at an exact point however fast or slow the machine is. A real SIGKILL: nothing in
the process gets to clean up."""

import os
import signal

_model, _, _epoch = os.environ["SHOPPING_MTL_KILL_AFTER"].partition(":")

import shopping_mtl  # noqa: E402,F401  (sets the environment TensorFlow reads at import)
import tensorflow as tf  # noqa: E402

_Backup = tf.keras.callbacks.BackupAndRestore


class _BackupThenKill(_Backup):
    def __init__(self, backup_dir, *args, **kwargs):
        super().__init__(backup_dir, *args, **kwargs)
        self._kills = os.path.basename(os.path.dirname(os.path.normpath(backup_dir))) == _model

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self._kills and epoch + 1 == int(_epoch):
            os.kill(os.getpid(), signal.SIGKILL)


tf.keras.callbacks.BackupAndRestore = _BackupThenKill
