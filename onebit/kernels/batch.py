"""Batch throughput of a packed model: :class:`BatchRunner` runs a batch as chunks of a few images, on several
Python worker threads at once.

Why. A packed model run on a whole batch runs each layer over every image before the next layer starts; beyond a
few images its activations (float NHWC intermediates, packed bits) no longer fit in cache and the model gets
*slower per image* as the batch grows (``reactnet_a`` at 224x224 on one Zen 3 core: ~50 images/s at batch 1,
~44 at batch 16, ~31 at batch 64). Run image by image, every intermediate stays cache-resident, and per-image
latency is that of batch 1. The packed kernels parallelise *within* an image (over output rows/channels), which at
batch 1 leaves threads idle at every small late layer and between kernel calls (the Python/torch glue between
them runs on one thread); running whole images on separate threads shares the work *across* images with no
synchronisation inside a forward.

What is computed. ``BatchRunner(model)(x)`` equals ``torch.cat([model(c) for c in x.split(k)])`` with ``k`` the
chunk size: packed models are eval-only (BatchNorm uses its running statistics, no layer mixes images), so this is
``model(x)``. The native kernels give every image the same result whatever the batch, chunking and thread count
(ReActNet-A, Bi-Real: bitwise); float reductions whose split depends on the thread count (BNext's attention means)
and torch's float layers (stem, head) may differ from the whole-batch run by float32 rounding.

How (the rule, :meth:`BatchRunner.plan`; measured on a 2-core Zen 3, see ``benchmarks/packed_throughput.py``):
with ``T = torch.get_num_threads()`` at call time, a batch of ``n > images_per_chunk`` images is split into
``ceil(n / images_per_chunk)`` chunks; when ``T > 1`` and there are at least two chunks, ``min(T, chunks)`` Python
threads (the caller's included) take chunks from a shared queue, each running the model with *one* kernel thread
(the ctypes calls and the torch ops release the GIL, so they run concurrently); otherwise the chunks run one after
the other with all ``T`` threads. A batch that fits one chunk, a non-tensor or non-4-D input and an empty batch go
to the model unchanged (the same result and the same errors as the model's own call).

Side effect. The C kernels and torch read their thread count from ``torch.get_num_threads()`` of the calling
Python thread at call time, and that setting is per thread but seeds new threads from a process-wide value. The
concurrent path therefore calls ``torch.set_num_threads(1)`` in the caller's thread and in each worker for the
duration of the call, and restores the caller's ``T`` in a ``finally`` (which also resets the process-wide value
to ``T``). Concurrent path calls from several Python threads are serialised by a module-level lock: they would
compete for the same cores, and one's restore must not land in the middle of another's run. The grad and
inference modes of the caller (thread-local in torch) are carried into the workers. An exception raised for a
chunk stops the other workers from taking new chunks and is re-raised in the caller's thread, unchanged: the
model's exception type (its message names the chunk's shape, not the batch's).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["DEFAULT_IMAGES_PER_CHUNK", "BatchRunner"]

#: images per chunk unless given: per-image packed throughput is highest at batch 1 (see the module docstring).
DEFAULT_IMAGES_PER_CHUNK = 1

_LOCK = threading.Lock()  # one concurrent-path call at a time (see "Side effect" above)


class BatchRunner(nn.Module):
    """Run ``model`` on a batch as chunks of ``images_per_chunk`` images, concurrently on up to
    ``torch.get_num_threads()`` Python threads (see :mod:`onebit.kernels.batch` for what and why).

    Args:
        model: a packed model (:func:`onebit.kernels.pack_`; any eval model whose images are independent works)
            taking ``[N, C, H, W]`` and returning a tensor whose first dimension is ``N``; kept as ``.model``.
        images_per_chunk: images per chunk (default :data:`DEFAULT_IMAGES_PER_CHUNK`).
        workers: the most Python threads a call uses; ``None`` (default): the call's ``torch.get_num_threads()``;
            ``1``: chunks one after the other, each with all threads.

    ``deepcopy``, pickle and ``.to()`` act on the wrapped model (the runner holds no thread state between calls).
    """

    def __init__(self, model: nn.Module, images_per_chunk: int = DEFAULT_IMAGES_PER_CHUNK, workers: int | None = None):
        super().__init__()
        if images_per_chunk < 1:
            raise ValueError(f"images_per_chunk must be >= 1, got {images_per_chunk}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1 or None, got {workers}")
        self.model = model
        self.images_per_chunk = int(images_per_chunk)
        self.workers = workers

    def plan(self, batch: int, threads: int | None = None) -> tuple[int, int]:
        """``(chunks, workers)`` for a batch of ``batch`` images with ``threads`` (default: the caller's
        ``torch.get_num_threads()``): ``chunks`` calls of the model, run on ``workers`` Python threads (1: one after
        the other with all threads; more: concurrently, one kernel thread each)."""
        t = torch.get_num_threads() if threads is None else threads
        chunks = max(1, -(-batch // self.images_per_chunk))
        limit = t if self.workers is None else min(t, self.workers)
        return chunks, (min(limit, chunks) if limit > 1 and chunks > 1 else 1)

    def describe(self, batch: int, threads: int | None = None) -> dict:
        """The configuration a call on ``batch`` images runs (for benchmark records)."""
        t = torch.get_num_threads() if threads is None else threads
        chunks, workers = self.plan(batch, t)
        return {
            "images_per_chunk": self.images_per_chunk,
            "chunks": chunks,
            "workers": workers,
            "kernel_threads": 1 if workers > 1 else t,
        }

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] <= self.images_per_chunk:
            return self.model(x)  # one call: the model's result and errors (non-4-D, empty batch, ...)
        parts = x.split(self.images_per_chunk)
        _, workers = self.plan(x.shape[0])
        if workers == 1:
            return _cat([self.model(p) for p in parts], x.shape[0])
        with _LOCK:
            return _cat(_run_concurrently(self.model, parts, workers), x.shape[0])

    def extra_repr(self) -> str:
        return f"images_per_chunk={self.images_per_chunk}, workers={self.workers}"


def _cat(outs: list, n: int) -> Tensor:
    if not all(isinstance(o, Tensor) and o.dim() >= 1 for o in outs):
        raise TypeError("BatchRunner: the wrapped model must return a tensor with the batch as its first dimension")
    y = torch.cat(outs)
    if y.shape[0] != n:
        raise TypeError(f"BatchRunner: the wrapped model returned {y.shape[0]} rows for {n} images")
    return y


def _run_concurrently(model: Callable[[Tensor], Tensor], parts: tuple[Tensor, ...], workers: int) -> list:
    """``[model(p) for p in parts]`` on ``workers`` threads (the caller's and ``workers - 1`` new ones), each with
    one torch/kernel thread; the caller's thread count is restored afterwards."""
    outs: list = [None] * len(parts)
    errors: list[BaseException] = []
    queue = iter(range(len(parts)))
    take = threading.Lock()
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def work() -> None:
        torch.set_num_threads(1)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            while not errors:
                with take:
                    i = next(queue, None)
                if i is None:
                    return
                try:
                    outs[i] = model(parts[i])
                except BaseException as e:  # re-raised in the caller's thread
                    errors.append(e)

    threads = torch.get_num_threads()
    helpers = [threading.Thread(target=work, name=f"onebit-batch-{k}", daemon=True) for k in range(workers - 1)]
    try:
        for h in helpers:
            h.start()
        work()
    finally:
        for h in helpers:
            h.join()
        torch.set_num_threads(threads)
    if errors:
        raise errors[0]
    return outs
