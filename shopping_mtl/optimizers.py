"""Optimisers for models with large embedding tables."""

from __future__ import annotations

import tensorflow as tf


class LazyAdam(tf.keras.optimizers.Adam):
    """Adam that, for sparse (embedding) gradients, updates only the rows in the batch.

    tf-keras's Adam decays the moments of every row of an embedding table on every step, a
    full pass over tables of millions of rows when a batch touches a few thousand; on the
    two-tower model that was half the step time. Here the moments and weights of the touched
    rows alone are read and written (the "lazy" Adam of TensorFlow Addons): rows absent from a
    batch keep their moments instead of decaying them. Dense gradients follow plain Adam.
    """

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step)) / (
            1 - tf.pow(beta_1, step))
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        # A row may appear several times in a batch: sum its gradients first.
        rows, position = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])  # (rows, dim)
        m_rows = tf.gather(m, rows) * beta_1 + (1 - beta_1) * grad
        v_rows = tf.gather(v, rows) * beta_2 + (1 - beta_2) * tf.square(grad)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))
