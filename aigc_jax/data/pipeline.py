"""Deterministic, checkpointable input pipelines (Grain) and on-device preprocessing.

The training stream is a Grain ``MapDataset`` whose element ``i`` is the ``i``-th *global* batch: batch ``i`` of
epoch ``e`` holds the examples ``perm_e[b*B:(b+1)*B]`` where ``perm_e`` is a permutation drawn from
``(seed, e)``. Gathering a whole batch per element keeps the host cost to one fancy index per step, and the
iterator's Grain state (the next index) is all that a checkpoint needs to resume mid-epoch. Each process reads only
its own contiguous rows of every global batch, so the global batch is the same for any number of processes.
"""

from __future__ import annotations

import grain
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from aigc_jax.core.config import DataConfig
from aigc_jax.core.errors import UserError
from aigc_jax.parallel.mesh import InFlight, batch_shards, local_batch_slice, to_global

# Length of the endless training stream (Grain needs a finite length; no run comes near it).
_STREAM_LEN = 2**40


class EpochBatches:
    """Random-access source of global batches over shuffled epochs (drop-remainder)."""

    def __init__(self, source, batch_size: int, seed: int, rows: slice | None = None):
        n = len(source)
        if batch_size > n:
            raise UserError(f"data.batch_size={batch_size} is larger than the training split ({n} examples)")
        self.source = source
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = n // batch_size
        self.rows = rows if rows is not None else slice(None)
        self._epoch = -1
        self._perm = None

    def __len__(self) -> int:
        return _STREAM_LEN

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = rng.permutation(len(self.source))
            self._epoch = epoch
        return self._perm

    def __getitem__(self, index: int):
        epoch, b = divmod(int(index), self.batches_per_epoch)
        idx = self.permutation(epoch)[b * self.batch_size : (b + 1) * self.batch_size][self.rows]
        return self.source.__getitems__(idx)


def train_iterator(source, config: DataConfig, examples_per_step: int):
    """An endless, checkpointable Grain iterator of this process's share of each global batch."""
    rows = local_batch_slice(examples_per_step)
    batches = EpochBatches(source, examples_per_step, config.seed, rows)
    ds = grain.MapDataset.source(batches)
    threads = config.read_threads
    read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    return iter(ds.to_iter_dataset(read_options=read))


def eval_batches(source, batch_size: int, max_batches: int = 0, multiple_of: int = 1, max_examples: int = 0):
    """Yield ``(batch, mask)`` over the first ``max_examples`` (0: all) examples of a split, in order; the last batch
    is padded (mask 0) to a full batch.

    ``batch_size`` is global; each process yields its own rows. ``mask`` is float32 [local_batch]. Every batch also
    holds ``"index"``, the examples' global indices (int32), which make the evaluation data transform a fixed
    function of the example (see `make_device_transform`), whatever the batch size, mesh or number of processes.
    """
    n = len(source)
    limit = min(n, max_examples) if max_examples > 0 else n
    if multiple_of > 1 and batch_size % multiple_of:
        batch_size += multiple_of - batch_size % multiple_of
    rows = local_batch_slice(batch_size)
    num = -(-limit // batch_size)
    if max_batches:
        num = min(num, max_batches)
    for b in range(num):
        idx = np.arange(b * batch_size, (b + 1) * batch_size)
        mask = (idx < limit).astype(np.float32)
        idx = np.minimum(idx, n - 1)[rows]
        batch = {**source.__getitems__(idx), "index": idx.astype(np.int32)}
        yield batch, mask[rows]


EVAL_KEY = 7919  # evaluations draw their keys as fold_in(key(seed + EVAL_KEY), batch index)


def masked_sums(fn, source, batch_size: int, batch_sharding, key, max_batches: int = 0, max_examples: int = 0,
                progress: str = "") -> tuple[dict, float]:
    """Run ``fn(global_batch, global_mask, key_i) -> {name: masked sum}`` over `eval_batches` of a split (batch
    ``i`` gets ``fold_in(key, i)``); returns the summed dict and the global number of examples counted.
    ``progress``: a tqdm description (empty: no bar)."""
    batches = eval_batches(source, batch_size, max_batches, max_examples=max_examples,
                           multiple_of=batch_shards(batch_sharding.mesh))
    totals = None
    count = 0.0
    in_flight = InFlight()
    for i, (batch, mask) in enumerate(tqdm(list(batches) if progress else batches, desc=progress, unit="batch",
                                           disable=not progress)):
        gb = to_global(batch, batch_sharding)
        gm = jax.make_array_from_process_local_data(batch_sharding, mask)
        sums = fn(gb, gm, jax.random.fold_in(key, i))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        in_flight.push(totals)
        count += float(jnp.sum(gm))  # the global count (processes may hold different numbers of padded rows)
    return jax.device_get(totals), count


def make_device_transform(config: DataConfig):
    """A pure function ``(batch, key) -> batch`` run inside the jitted step: uint8 -> float32 in [0, 1], then
    dynamic binarization (x ~ Bernoulli(intensity)) when ``binarize='dynamic'``.

    Training batches get a fresh draw from ``key`` at every use. Evaluation batches (they carry the examples'
    global ``"index"``, see `eval_batches`) get a fixed binarized test set: example ``i`` is drawn with
    ``fold_in(key(0), i)``, so every evaluation (any seed, batch size, mesh, -ELBO or IWAE) sees the same images.
    """

    def transform(batch, key):
        out = dict(batch)
        index = out.pop("index", None)
        if "image" not in batch:  # token batches pass through
            return out
        image = batch["image"]
        # Elementwise work on the [B, H * W * C] view (a free reshape): XLA:CPU vectorises loops along the last
        # axis, which is 1 for grey images. The random draws are the same: they follow the row-major index.
        x = image.reshape(image.shape[0], -1).astype(jnp.float32) / 255.0
        if config.binarize == "dynamic":
            if index is None:
                x = jax.random.bernoulli(key, x).astype(jnp.float32)
            else:
                keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(index)
                x = jax.vmap(jax.random.bernoulli)(keys, x).astype(jnp.float32)
        out["image"] = x.reshape(image.shape)
        return out

    return transform
