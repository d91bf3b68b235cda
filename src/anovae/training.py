"""The one training loop: mini-batches, KL warm-up, validation, early stopping, clipping.

Used by every detector. The data live in memory as one tensor and batches are slices of a
permutation drawn from a local generator, which is much faster than a ``DataLoader`` for tables.
Data larger than memory come as a :class:`BatchSource` instead (:mod:`anovae.outofcore`). Inside
a torch.distributed process group (torchrun) the loop trains data-parallel with DDP; the hooks
live in :mod:`anovae.distributed`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from anovae.exceptions import TrainingError
from anovae.losses import LossTerms

__all__ = ["BatchSource", "TrainConfig", "TrainResult", "cpu_threads", "macs_per_row",
           "make_optimizer", "small_net_threads", "train"]

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, torch.Tensor, float, torch.Generator], LossTerms]


class BatchSource(Protocol):
    """Training rows that are not one in-memory tensor (e.g. streamed from Parquet files).

    In a process group each rank has its own source (its shard of the data), and every rank's
    ``batches`` must yield the same number of batches of the same size in an epoch.
    """

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """One epoch of ``(B, *F)`` batches on the training device, in a random order."""
        ...


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (all in the estimator's parameters)."""

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    beta: float = 1.0
    warmup_epochs: int = 10
    patience: int = 10
    clip_grad_norm: float = 5.0
    verbose: bool = False
    #: CPU threads for the optimisation steps (``None``: leave torch's setting alone).
    num_threads: int | None = None


@dataclass
class TrainResult:
    """Loss curves (one value per epoch) and where training stopped."""

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0
    stopped_early: bool = False


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads, then restore the previous setting."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: Multiply-accumulates per update below which a CPU step runs on one thread (measured on a
#: quiet 2-core box for PyOD's 128-64-32 MLP: 1.8 vs 1.7 ms per 256-row step (8M MACs) with 1
#: vs 2 threads, 2.9 vs 2.3 ms at 512 rows (16M), 4.8 vs 3.4 ms at 1,024 rows (32M)).
SMALL_STEP_MACS = 10_000_000


def macs_per_row(net: nn.Module, example: torch.Tensor | None = None) -> int:
    """Multiply-accumulates of one encode + decode pass for one row (forward only).

    Linear layers count their weights; convolutions count their weights times the positions
    they are applied at, which needs one ``example`` row ``(1, *F)`` to trace the shapes (without
    it, convolutions count their weights once: a lower bound).
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        w = module.weight.numel()  # type: ignore[union-attr]
        if isinstance(module, nn.ConvTranspose2d):  # each input position scatters the kernel
            total += w * inputs[0].shape[-2] * inputs[0].shape[-1]
        else:  # each output position gathers the kernel
            total += w * output.shape[-2] * output.shape[-1]

    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    linear = sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Linear))
    if example is None or not convs:
        return linear + sum(m.weight.numel() for m in convs)
    handles = [m.register_forward_hook(hook) for m in convs]
    training = net.training
    net.eval()  # no dropout draws, no batch-statistics updates
    try:
        with torch.no_grad():
            mu, _ = net.encode(example[:1])  # type: ignore[operator]
            net.decode(mu)  # type: ignore[operator]
    finally:
        net.train(training)
        for h in handles:
            h.remove()
    return linear + total


def small_net_threads(net: nn.Module, device: torch.device, batch_size: int,
                      example: torch.Tensor | None = None) -> int | None:
    """One thread for small CPU steps, else ``None`` (torch's default).

    A tabular VAE step on a 256-row batch is well under a millisecond of arithmetic: splitting
    each small matmul over several threads costs as much in synchronisation as it saves, and on a
    busy machine it is many times slower (measured: 87 ms vs 5 ms per step with 2 threads vs 1 on
    a loaded 2-core box). Steps of at least :data:`SMALL_STEP_MACS` multiply-accumulates (forward
    MACs per row times ``batch_size``; large batches, convolutional nets) keep all threads.
    """
    if device.type != "cpu":
        return None
    return 1 if macs_per_row(net, example) * batch_size < SMALL_STEP_MACS else None


def make_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam over ``net``'s parameters; the fused kernel where torch has one for the device.

    The fused kernel updates all parameters in one call: on a 3-layer MLP it cuts the optimiser
    step from about 0.5 ms to 0.17 ms (CPU), a fifth of a 256-row training step.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    if params and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        try:
            return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                    fused=True)
        except (RuntimeError, ValueError):  # torch < 2.4 has no fused Adam for the CPU
            pass
    return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def _beta_at(epoch: int, cfg: TrainConfig) -> float:
    """Linear KL warm-up from ~0 to ``beta`` over ``warmup_epochs`` epochs."""
    if cfg.warmup_epochs <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, (epoch + 1) / cfg.warmup_epochs)


@torch.no_grad()
def _evaluate(net: nn.Module, x: torch.Tensor, loss_fn: LossFn, beta: float, seed: int,
              batch_size: int, dist: Any = None) -> float:
    """Mean loss over ``x`` with a fixed noise seed, so epochs are comparable.

    In a process group (``dist``) ``x`` is this rank's share and the mean is all-reduced.
    """
    net.eval()
    g = torch.Generator(device=x.device).manual_seed(seed)
    total, count = 0.0, x.shape[0]
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        total += float(loss_fn(net, xb, beta, g).loss) * xb.shape[0]
    if dist is not None:
        from anovae.distributed import all_reduce_sum

        both = torch.tensor([total, float(count)], dtype=torch.float64, device=x.device)
        total, count = all_reduce_sum(both, "all-reducing the validation loss").tolist()
    return total / count


def _tensor_batches(x: torch.Tensor, batch_size: int, generator: torch.Generator, dist: Any
                    ) -> Iterator[tuple[torch.Tensor, float]]:
    """One epoch of ``(batch, loss weight)`` from an in-memory ``(N, *F)`` tensor.

    In a process group every rank holds the same ``x`` and draws the same permutation; each
    global batch is split into one contiguous shard per rank, weighted by its share of the batch
    times the number of ranks, so DDP's gradient average is the global batch's mean gradient.
    """
    n = x.shape[0]
    world = 1 if dist is None else dist.world_size
    if batch_size < world:
        raise TrainingError(f"batch_size {batch_size} is smaller than the {world} processes: "
                            "every process needs a share of each batch")
    perm = torch.randperm(n, generator=generator, device=x.device)
    last = math.ceil(n / batch_size) - 1
    for i in range(last + 1):
        idx = perm[i * batch_size:(i + 1) * batch_size]
        if i == last > 0 and idx.numel() < min(batch_size, max(2, world)):
            continue  # a tiny trailing batch adds noise and nothing else (and some ranks none)
        if dist is None:
            yield x[idx], 1.0
        else:
            k = idx.numel()
            idx = idx.tensor_split(world)[dist.rank]
            yield x[idx], idx.numel() * world / k


def train(
    net: nn.Module,
    loss_fn: LossFn,
    x_train: torch.Tensor | BatchSource,
    x_val: torch.Tensor | None,
    cfg: TrainConfig,
    generator: torch.Generator,
) -> TrainResult:
    """Train ``net`` in place and restore the weights of the best validation epoch.

    Early stopping watches the validation loss at the full ``beta`` (epochs during warm-up do not
    count, since their loss is not comparable), or the training loss when there is no validation
    split. Every rank of a distributed run takes the same decision from the same all-reduced
    loss (see :mod:`anovae.distributed`).

    Args:
        net: the network (trained in place).
        loss_fn: ``(net, batch, beta, generator) -> LossTerms``.
        x_train: ``(N, D)`` training rows on the training device (the same on every rank of a
            process group), or a :class:`BatchSource` (in a process group: this rank's).
        x_val: ``(M, D)`` validation rows or ``None`` (with a tensor ``x_train`` the same on
            every rank; with a :class:`BatchSource` this rank's own).
        cfg: optimisation settings.
        generator: local random generator (shuffling and reparameterisation noise).

    Raises:
        TrainingError: when the loss becomes NaN or infinite, or another rank of a process
            group fails.
    """
    from anovae.distributed import collective_errors, current

    dist = current()
    with cpu_threads(cfg.num_threads), (collective_errors("training") if dist is not None
                                        else contextlib.nullcontext()):
        return _train(net, loss_fn, x_train, x_val, cfg, generator, dist)


def _train(net: nn.Module, loss_fn: LossFn, x_train: torch.Tensor | BatchSource,
           x_val: torch.Tensor | None, cfg: TrainConfig, generator: torch.Generator,
           dist: Any) -> TrainResult:
    in_memory = isinstance(x_train, torch.Tensor)
    batch_size = max(1, min(cfg.batch_size, x_train.shape[0])) if in_memory else cfg.batch_size
    device = next(net.parameters()).device
    step_loss: Callable[..., LossTerms] = functools.partial(loss_fn, net)
    noise = generator
    if dist is not None:
        from anovae.distributed import all_reduce_sum, ddp_loss, rank_generator, shard_rows

        step_loss = ddp_loss(net, loss_fn)  # the backward pass all-reduces the gradients
        noise = rank_generator(generator, dist)  # `generator` keeps the batch order in step
        if in_memory and x_val is not None:
            x_val = shard_rows(x_val, dist)
    opt = make_optimizer(net, cfg)
    result = TrainResult(history={"loss": [], "reconstruction": [], "kl": [], "beta": [],
                                  "val_loss": [], "seconds": []})
    best, best_state, since_best = math.inf, None, 0
    val_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    bar = tqdm(range(cfg.epochs), desc="training", unit="epoch", disable=not cfg.verbose,
               leave=False)
    for epoch in bar:
        started = time.perf_counter()
        beta = _beta_at(epoch, cfg)
        net.train()
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # 3 loss sums, rows seen
        batches = (_tensor_batches(x_train, batch_size, generator, dist) if in_memory
                   else ((xb, 1.0) for xb in x_train.batches(batch_size, generator)))
        for xb, weight in batches:
            terms = step_loss(xb, beta, noise)
            opt.zero_grad(set_to_none=True)
            (terms.loss if weight == 1.0 else terms.loss * weight).backward()
            if cfg.clip_grad_norm and cfg.clip_grad_norm > 0:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad_norm)
            opt.step()
            k = xb.shape[0]  # rows actually trained on (a skipped tiny batch is not counted)
            sums[:3] += torch.stack([terms.loss.detach(), terms.reconstruction.detach(),
                                     terms.kl.detach()]).double() * k
            sums[3] += k
        if dist is not None:
            sums = all_reduce_sum(sums, "all-reducing the epoch loss")
        *loss_sums, seen = sums.tolist()  # one host sync per epoch
        if seen == 0:
            raise TrainingError(f"epoch {epoch + 1} had no training batch: the data source "
                                "yielded no rows")
        mean = [v / seen for v in loss_sums]
        if not all(math.isfinite(v) for v in mean):
            raise TrainingError(
                f"the training loss became {mean[0]} at epoch {epoch + 1}; lower "
                "learning_rate, check the data for extreme values, or use a different scaler"
            )
        h = result.history
        h["loss"].append(mean[0])
        h["reconstruction"].append(mean[1])
        h["kl"].append(mean[2])
        h["beta"].append(beta)
        if x_val is not None:
            monitored = _evaluate(net, x_val, loss_fn, beta, val_seed, max(batch_size, 4096),
                                  dist)
        else:
            monitored = mean[0]
        h["val_loss"].append(monitored)
        h["seconds"].append(time.perf_counter() - started)  # the epoch's updates + validation
        if not math.isfinite(monitored):
            raise TrainingError(f"the validation loss became {monitored} at epoch {epoch + 1}")
        result.epochs_run = epoch + 1
        bar.set_postfix(loss=f"{mean[0]:.4g}", val=f"{monitored:.4g}")
        logger.debug("epoch %d: loss %.5g val %.5g beta %.3g", epoch + 1, mean[0], monitored,
                     beta)
        if epoch + 1 < cfg.warmup_epochs:
            continue  # loss not comparable while beta is still rising
        if monitored < best - 1e-4 * abs(best) if math.isfinite(best) else True:
            best, since_best, result.best_epoch = monitored, 0, epoch + 1
            best_state = copy.deepcopy(net.state_dict())
        else:
            since_best += 1
            if cfg.patience > 0 and since_best >= cfg.patience:
                result.stopped_early = True
                break
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    logger.info("trained %d epochs (best %d%s)", result.epochs_run, result.best_epoch,
                ", stopped early" if result.stopped_early else "")
    if x_val is not None and still_improving(result.epochs_run, result.best_epoch):
        logger.info("the validation loss was still falling when the epochs ran out (best at "
                    "the last epoch): more epochs (epochs=%d, or --epochs) may fit the normal "
                    "rows better, at more fit time", 2 * result.epochs_run)
    return result


def still_improving(epochs_run: int, best_epoch: int) -> bool:
    """Whether training ended at its epoch budget while the monitored loss was still at its
    best (the last of several epochs was the best one; a run that stopped early had no gain in
    its last ``patience`` epochs). A model fitted that way may gain from more epochs: the
    default budget is a fixed number of updates, chosen for fit time (docs/benchmarks.md)."""
    return epochs_run > 1 and best_epoch == epochs_run
