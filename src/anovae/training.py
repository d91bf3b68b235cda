"""The one training loop: mini-batches, KL warm-up, validation, early stopping, clipping.

Used by every detector. The data live in memory as one tensor and batches are slices of a
permutation drawn from a local generator, which is much faster than a ``DataLoader`` for tables.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from anovae.exceptions import TrainingError
from anovae.losses import LossTerms

__all__ = ["TrainConfig", "TrainResult", "cpu_threads", "small_net_threads", "train"]

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, torch.Tensor, float, torch.Generator], LossTerms]


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


def small_net_threads(net: nn.Module, device: torch.device) -> int | None:
    """One thread for small networks on the CPU, else ``None`` (torch's default).

    A tabular VAE step on a 256-row batch is a few hundred microseconds of work: splitting each
    small matmul over several threads costs more in synchronisation than it saves, and on a busy
    machine it is many times slower (measured: 87 ms vs 5 ms per step with 2 threads vs 1 on a
    loaded 2-core box). Large networks (images) keep all threads.
    """
    n_params = sum(p.numel() for p in net.parameters())
    return 1 if device.type == "cpu" and n_params < 250_000 else None


def _beta_at(epoch: int, cfg: TrainConfig) -> float:
    """Linear KL warm-up from ~0 to ``beta`` over ``warmup_epochs`` epochs."""
    if cfg.warmup_epochs <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, (epoch + 1) / cfg.warmup_epochs)


@torch.no_grad()
def _evaluate(net: nn.Module, x: torch.Tensor, loss_fn: LossFn, beta: float, seed: int,
              batch_size: int) -> float:
    """Mean loss over ``x`` with a fixed noise seed, so epochs are comparable."""
    net.eval()
    g = torch.Generator(device=x.device).manual_seed(seed)
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        total += float(loss_fn(net, xb, beta, g).loss) * xb.shape[0]
    return total / x.shape[0]


def train(
    net: nn.Module,
    loss_fn: LossFn,
    x_train: torch.Tensor,
    x_val: torch.Tensor | None,
    cfg: TrainConfig,
    generator: torch.Generator,
) -> TrainResult:
    """Train ``net`` in place and restore the weights of the best validation epoch.

    Early stopping watches the validation loss at the full ``beta`` (epochs during warm-up do not
    count, since their loss is not comparable), or the training loss when there is no validation
    split. Every rank of a distributed run would take the same decision from the same loss.

    Args:
        net: the network (trained in place).
        loss_fn: ``(net, batch, beta, generator) -> LossTerms``.
        x_train: ``(N, D)`` training rows on the training device.
        x_val: ``(M, D)`` validation rows or ``None``.
        cfg: optimisation settings.
        generator: local random generator (shuffling and reparameterisation noise).

    Raises:
        TrainingError: when the loss becomes NaN or infinite.
    """
    with cpu_threads(cfg.num_threads):
        return _train(net, loss_fn, x_train, x_val, cfg, generator)


def _train(net: nn.Module, loss_fn: LossFn, x_train: torch.Tensor, x_val: torch.Tensor | None,
           cfg: TrainConfig, generator: torch.Generator) -> TrainResult:
    n = x_train.shape[0]
    batch_size = max(1, min(cfg.batch_size, n))
    steps = math.ceil(n / batch_size)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    result = TrainResult(history={"loss": [], "reconstruction": [], "kl": [], "beta": [],
                                  "val_loss": []})
    best, best_state, since_best = math.inf, None, 0
    val_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    bar = tqdm(range(cfg.epochs), desc="training", unit="epoch", disable=not cfg.verbose,
               leave=False)
    for epoch in bar:
        beta = _beta_at(epoch, cfg)
        net.train()
        perm = torch.randperm(n, generator=generator, device=x_train.device)
        sums = torch.zeros(3, dtype=torch.float64, device=x_train.device)
        seen = 0  # rows actually trained on (a skipped one-row batch is not counted)
        for i in range(steps):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            if idx.numel() < 2 and n >= 2 and i > 0:
                continue  # a trailing batch of one row adds noise and nothing else
            terms = loss_fn(net, x_train[idx], beta, generator)
            opt.zero_grad(set_to_none=True)
            terms.loss.backward()
            if cfg.clip_grad_norm and cfg.clip_grad_norm > 0:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad_norm)
            opt.step()
            k = idx.numel()
            seen += k
            sums += torch.stack([terms.loss.detach(), terms.reconstruction.detach(),
                                 terms.kl.detach()]).double() * k
        mean = (sums / seen).tolist()  # one host sync per epoch
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
            monitored = _evaluate(net, x_val, loss_fn, beta, val_seed, max(batch_size, 4096))
        else:
            monitored = mean[0]
        h["val_loss"].append(monitored)
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
    return result
