"""Training on several processes with PyTorch DistributedDataParallel (DDP), as torchrun runs it.

``torchrun --nproc-per-node N -m anovae fit DATA -o MODEL`` starts ``N`` copies of the CLI with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set (multi-node:
torchrun's usual ``--nnodes``/``--rdzv-*`` flags). :func:`process_group` joins the group (gloo
on the CPU, NCCL on GPUs) with a timeout, so a rank that crashes or hangs ends the job with a
:class:`anovae.TrainingError` naming the rank instead of a silent hang.

Inside a process group, :func:`anovae.training.train` (the one training loop) trains data-parallel
on its own, through the helpers here:

- every rank holds the same in-memory rows (or its own stream of chunks, see
  :mod:`anovae.outofcore`) and draws the same permutation from the same seed; each global batch
  of ``batch_size`` rows is split into ``world_size`` contiguous shards, one per rank;
- the network is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, which averages
  the gradients over the ranks; each rank's loss is weighted by its share of the global batch,
  so the averaged gradient is exactly the gradient of the global batch's mean loss (for a plain
  autoencoder, DDP training equals single-process training up to floating-point summation order);
- each rank draws its own reparameterisation noise (a VAE trained on N ranks is an equally valid
  draw of the same training, not the same numbers as on one process);
- epoch losses and the validation loss are all-reduced, so every rank takes the same early
  stopping decision and stops at the same epoch.

Only rank 0 writes the model (:func:`save_on_main`, atomic as every anovae write).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from anovae.exceptions import TrainingError

__all__ = [
    "DistContext",
    "check_same_data",
    "collective_errors",
    "current",
    "is_main_process",
    "launched_by_torchrun",
    "process_group",
    "save_on_main",
    "shared_seed",
]

logger = logging.getLogger(__name__)

#: Seconds a collective operation may wait for the other ranks before the job fails
#: (environment variable ``ANOVAE_DIST_TIMEOUT`` overrides it).
DEFAULT_TIMEOUT_S = 600.0
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: Words of gloo's and NCCL's messages when a peer is lost (they are raised as RuntimeError
#: from inside the backward pass).
_NETWORK_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group."""

    rank: int
    world_size: int


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group of more than one process."""
    return all(k in os.environ for k in _ENV) and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _timeout_s() -> float:
    raw = os.environ.get("ANOVAE_DIST_TIMEOUT")
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"ANOVAE_DIST_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if not 1e-3 <= value <= 1e7:  # NaN fails too; inf overflowed timedelta, 1e-9 crashed gloo
        raise ValueError(f"ANOVAE_DIST_TIMEOUT must be a number of seconds from 0.001 to 1e7 "
                         f"(about 115 days), got {raw!r}")
    return value


def current() -> DistContext | None:
    """The rank and size of the initialised process group when it has 2+ processes, else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    return DistContext(dist.get_rank(), world) if world > 1 else None


def is_main_process() -> bool:
    """True on rank 0, and in any process that is not part of a process group."""
    ctx = current()
    return ctx is None or ctx.rank == 0


@contextlib.contextmanager
def collective_errors(what: str) -> Iterator[None]:
    """Turn a failed collective operation into a :class:`TrainingError` naming this rank.

    gloo and NCCL raise when a peer's connection closes (a rank crashed or was killed) or when
    the process group's timeout passes (a rank hangs).
    """
    import torch.distributed as dist

    try:
        yield
    except RuntimeError as exc:  # DistError, or a RuntimeError out of DDP's backward hooks
        text = str(exc).lower()
        if not isinstance(exc, dist.DistError) and not any(m in text for m in _NETWORK_WORDS):
            raise  # a local error of this rank, not a lost peer
        ctx = current()
        where = f"rank {ctx.rank} of {ctx.world_size}" if ctx else "this rank"
        raise TrainingError(
            f"{where}: {what} failed because another rank stopped (it crashed, was killed, or "
            f"did not answer within the {_timeout_s():g}s timeout, ANOVAE_DIST_TIMEOUT); see "
            f"that rank's error. ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})"
        ) from exc


@contextlib.contextmanager
def process_group(backend: str | None = None) -> Iterator[DistContext]:
    """Join the process group described by torchrun's environment variables; leave it on exit.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; ``None``: NCCL when CUDA is available, else gloo.
            With NCCL each process uses the GPU ``LOCAL_RANK``.

    Raises:
        TrainingError: the environment does not describe a process group (not run by torchrun),
            or the other ranks did not join within the timeout.
    """
    import torch.distributed as dist

    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise TrainingError(
            f"distributed training needs the variables torchrun sets ({', '.join(missing)} "
            "missing): run `torchrun --nproc-per-node N -m anovae fit ...`")
    if dist.is_initialized():  # joined by the caller: use that group and leave it alone
        yield DistContext(dist.get_rank(), dist.get_world_size())
        return
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    timeout = _dt.timedelta(seconds=_timeout_s())
    try:
        dist.init_process_group(backend, timeout=timeout)
    except (dist.DistError, RuntimeError, ValueError) as exc:
        raise TrainingError(
            f"could not join the process group at {os.environ['MASTER_ADDR']}:"
            f"{os.environ['MASTER_PORT']} as rank {os.environ['RANK']} of "
            f"{os.environ['WORLD_SIZE']} ({backend}): {exc}") from exc
    ctx = DistContext(dist.get_rank(), dist.get_world_size())
    logger.info("joined the process group: rank %d of %d (%s)", ctx.rank, ctx.world_size, backend)
    try:
        yield ctx
    finally:
        dist.destroy_process_group()


def shared_seed(seed: int) -> int:
    """Rank 0's ``seed`` on every rank (unchanged outside a process group).

    ``random_state=None`` draws a fresh seed per process; the ranks must agree on it (same
    initial weights, same splits, same batch order).
    """
    ctx = current()
    if ctx is None:
        return seed
    import torch.distributed as dist

    box = [seed]
    with collective_errors("agreeing on the random seed"):
        dist.broadcast_object_list(box, src=0)
    return int(box[0])


def check_same_data(*arrays: Any) -> None:
    """Every rank must hold the same training data (the same file, read alike): compare the
    shapes and a SHA-256 of ``arrays`` across the ranks, and raise the same one-line
    :class:`TrainingError` on each when they differ. Without it, fewer rows on one rank ended
    in a C++ abort of gloo, and other values on one rank trained with another scaler there.
    No-op outside a process group."""
    ctx = current()
    if ctx is None:
        return
    import hashlib

    import torch.distributed as dist

    digest = hashlib.sha256()
    shapes = []
    for a in arrays:
        if a is None:
            shapes.append(None)
            continue
        arr = np.asarray(a)
        if arr.dtype == object:  # its bytes are pointers: compare the values' text
            arr = arr.astype(str)
        arr = np.ascontiguousarray(arr)
        shapes.append(tuple(arr.shape))
        digest.update(str(arr.dtype).encode())
        digest.update(arr.tobytes())
    mine = (shapes, digest.hexdigest())
    seen: list[Any] = [None] * ctx.world_size
    with collective_errors("comparing the ranks' data"):
        dist.all_gather_object(seen, mine)
    if any(s != seen[0] for s in seen):
        parts = ", ".join(f"rank {r}: {s[0][0][0] if s[0] and s[0][0] else '?'} rows, "
                          f"sha256 {s[1][:8]}" for r, s in enumerate(seen))
        raise TrainingError(f"the ranks read different training data ({parts}): give every "
                            "rank the same file")


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if current() is None:
        return
    import torch.distributed as dist

    with collective_errors("waiting for the other ranks"):
        dist.barrier()


def save_on_main(detector: Any, path: str | os.PathLike) -> Path:
    """Rank 0 saves ``detector`` (atomically); every rank then waits until it is written."""
    path = Path(path)
    if is_main_process():
        detector.save(path)
    barrier()
    return path


# -- hooks of the training loop (anovae.training) ---------------------------------------------
class _LossModule(nn.Module):
    """``forward(batch, beta, generator)`` = the detector's loss, so that DDP sees the forward
    pass (our networks are used through ``encode``/``decode``, not ``forward``)."""

    def __init__(self, net: nn.Module, loss_fn: Callable[..., Any]) -> None:
        super().__init__()
        self.net = net
        self.loss_fn = loss_fn

    def forward(self, xb: torch.Tensor, beta: float, generator: torch.Generator) -> Any:
        return self.loss_fn(self.net, xb, beta, generator)


def ddp_loss(net: nn.Module, loss_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``(batch, beta, generator) -> LossTerms`` through DistributedDataParallel: the backward
    pass averages the gradients of ``net`` over the ranks. Rank 0's weights are broadcast."""
    from torch.nn.parallel import DistributedDataParallel

    device = next(net.parameters()).device
    with collective_errors("setting up DistributedDataParallel"):
        return DistributedDataParallel(
            _LossModule(net, loss_fn),
            device_ids=[device.index] if device.type == "cuda" else None,
        )


def rank_generator(generator: torch.Generator, ctx: DistContext) -> torch.Generator:
    """This rank's own noise generator, derived from ``generator``'s seed and the rank.

    ``generator`` itself is left to the batch order, which must stay the same on every rank.
    """
    seed = (generator.initial_seed() * 1_000_003 + 7919 * (ctx.rank + 1)) % (2**63 - 1)
    return torch.Generator(device=generator.device).manual_seed(seed)


def shard_rows(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's contiguous share of ``x``'s rows (sizes differ by at most one)."""
    return x.tensor_split(ctx.world_size)[ctx.rank]


def all_reduce_sum(t: torch.Tensor, what: str) -> torch.Tensor:
    """The element-wise sum of ``t`` over the ranks (a new tensor on every rank)."""
    import torch.distributed as dist

    out = t.clone()
    with collective_errors(what):
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
