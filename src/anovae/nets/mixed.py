"""Variational autoencoder for mixed-type rows: one likelihood per original column.

Input ``x`` is the code array of :mod:`anovae.mixed`, ``(B, C)``, one entry per original column:
a scaled number (numeric), 0/1 (boolean), a category index or -1 for an unseen category
(categorical); NaN marks a missing cell in any column.

Encoder input ``(B, Cn + Cb + sum K + C)``: numeric values (through ``asinh``) and booleans (0
where missing), the one-hot codes of the categorical columns (all zeros where missing or unseen)
and one missing-indicator per column (1 where missing or unseen). One-hot into the first linear
layer is an embedding of the layer's width (the product of a one-hot vector with a weight matrix
picks a row), without a second small embedding table to size. In training, :data:`MASK_RATE` of
the cells are hidden from the encoder at random (as if missing).

Decoder output ``loc`` ``(..., P)`` packs every column's parameters: Gaussian means and
log-variances of the numeric columns, Bernoulli logits of the booleans, softmax logits of the
categories. :meth:`MixedAutoencoder.nll` turns them into the per-column negative log-likelihood
``(..., B, C)``:

- numeric: Gaussian on ``asinh`` of the scaled value (linear within about one spread of the
  median, logarithmic beyond: heavy-tailed columns such as byte counts, whose scaled values reach
  1e5, would otherwise dominate every score and swamp the other columns), with a learned per-row
  variance, softly floored at ``MixedConfig.logvar_floor`` (as in :mod:`anovae.nets.mlp`);
- boolean: Bernoulli; categorical: categorical (softmax);
- unseen category (or a number other than 0/1 in a boolean column): maximally surprising,
  ``max(max_k -log p_k, log(n_observed + 1))``: at least the surprise of the least likely known
  value, and of an event rarer than one in the ``n_observed`` training cells of the column (for
  a column never observed in training, the most observed cells of any column: its rows);
- missing cell: the model's *expected* negative log-likelihood of the cell given the rest of the
  row (the entropy of the predicted distribution), detached from the gradient. The cell is thus
  masked out of the likelihood that is trained, and a row with gaps is scored as if its missing
  cells were typical for it: summing only the observed cells would favour rows with gaps (fewer
  terms), and rescaling the sum by ``C / n_observed`` would punish or favour them depending on
  which column is missing (columns differ in their typical surprise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anovae.likelihoods import bernoulli_nll, categorical_nll, gaussian_nll
from anovae.nets.blocks import (
    LOGVAR_MIN,
    decoder_logvar,
    floor_from_doc,
    floor_to_doc,
    mlp,
    posterior_logvar,
)

__all__ = ["MixedAutoencoder", "MixedConfig"]

_LOG_2PI = math.log(2.0 * math.pi)

#: Share of the cells hidden from the encoder at random in each training batch (the likelihood
#: still scores them). The encoder learns to infer a row's code from part of it, so it is ready
#: for real gaps, and the decoder learns to predict each column from the others (a broken
#: dependency between columns then shows). Measured on NSL-KDD's *train* file (docs/benchmarks.md).
MASK_RATE = 0.3


@dataclass(frozen=True)
class MixedConfig:
    """Everything needed to rebuild a :class:`MixedAutoencoder` (stored in saved models).

    ``kinds[j]`` is ``"numeric"``, ``"boolean"`` or ``"categorical"``; ``cardinalities[j]`` the
    number of categories of a categorical column (0 otherwise); ``n_observed[j]`` the training
    cells of column ``j`` that were observed (sets the surprise of an unseen category).
    """

    kinds: tuple[str, ...]
    cardinalities: tuple[int, ...]
    n_observed: tuple[int, ...]
    hidden_dims: tuple[int, ...] = (64, 32)
    latent_dim: int = 8
    activation: str = "relu"
    dropout: float = 0.0
    variational: bool = True
    mask_rate: float = MASK_RATE
    logvar_floor: float = LOGVAR_MIN
    #: ``(lo, hi)`` per numeric column: the range of ``asinh`` of its scaled training values,
    #: to which the encoder's input is clipped (``None``: not clipped, models before 0.6).
    input_bounds: tuple[tuple[float, float], ...] | None = None
    kind: str = field(default="mixed", init=False)

    @property
    def n_features(self) -> int:
        return len(self.kinds)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("kinds", "cardinalities", "n_observed", "hidden_dims"):
            d[k] = list(d[k])
        if d["input_bounds"] is None:  # the document older versions read
            del d["input_bounds"]
        else:
            d["input_bounds"] = [list(b) for b in d["input_bounds"]]
        return floor_to_doc(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixedConfig:
        d = {k: v for k, v in d.items() if k != "kind"}
        d["kinds"] = tuple(str(k) for k in d["kinds"])
        for k in ("cardinalities", "n_observed", "hidden_dims"):
            d[k] = tuple(int(v) for v in d[k])
        d["mask_rate"] = float(d.get("mask_rate", 0.0))
        if d.get("input_bounds") is not None:
            d["input_bounds"] = tuple((float(lo), float(hi)) for lo, hi in d["input_bounds"])
        return cls(**floor_from_doc(d))


class MixedAutoencoder(nn.Module):
    """Encoder ``codes -> hidden -> (mu, logvar)``; decoder ``z -> hidden -> per-column params``.

    >>> cfg = MixedConfig(kinds=("numeric", "categorical", "boolean"), cardinalities=(0, 3, 0),
    ...                   n_observed=(10, 10, 10), hidden_dims=(8,), latent_dim=2)
    >>> net = MixedAutoencoder(cfg)
    >>> x = torch.tensor([[0.5, 2.0, 1.0], [float("nan"), -1.0, 0.0]])
    >>> mu, logvar = net.encode(x)
    >>> loc, _ = net.decode(mu)
    >>> tuple(net.nll(x, loc, None).shape), tuple(net.mean(loc).shape)
    ((2, 3), (2, 3))
    """

    def __init__(self, config: MixedConfig) -> None:
        super().__init__()
        if not config.variational:
            raise ValueError("MixedAutoencoder is variational only")
        self.config = config
        kinds = config.kinds
        num = [j for j, k in enumerate(kinds) if k == "numeric"]
        boo = [j for j, k in enumerate(kinds) if k == "boolean"]
        cat = [j for j, k in enumerate(kinds) if k == "categorical"]
        card = [max(1, config.cardinalities[j]) for j in cat]
        self.n_num, self.n_bool, self.n_cat = len(num), len(boo), len(cat)
        self.n_onehot = sum(card)
        # Buffers (not saved: they follow from the config).
        self.register_buffer("num_idx", torch.tensor(num, dtype=torch.long), persistent=False)
        bounds = config.input_bounds or [(-math.inf, math.inf)] * len(num)
        if len(bounds) != len(num):
            raise ValueError(f"input_bounds has {len(bounds)} ranges for {len(num)} numeric "
                             "columns")
        self.register_buffer("num_lo", torch.tensor([b[0] for b in bounds], dtype=torch.float32),
                             persistent=False)
        self.register_buffer("num_hi", torch.tensor([b[1] for b in bounds], dtype=torch.float32),
                             persistent=False)
        self.register_buffer("bool_idx", torch.tensor(boo, dtype=torch.long), persistent=False)
        self.register_buffer("cat_idx", torch.tensor(cat, dtype=torch.long), persistent=False)
        offsets = [0]
        for k in card[:-1]:
            offsets.append(offsets[-1] + k)
        self.register_buffer("cat_offset", torch.tensor(offsets[:len(cat)], dtype=torch.long),
                             persistent=False)
        # Categorical columns in groups of similar cardinality (padded to the next power of 2):
        # group g's (n_g, W_g) positions of each column's logits in the flat logits, padding
        # pointing to an extra slot that holds -inf. One padded (Cc, max K) tensor made every
        # column as costly as the widest (a 1,000-category column multiplied the time and memory
        # of forty 10-category ones by 100).
        groups: dict[int, list[int]] = {}
        for i, k in enumerate(card):
            groups.setdefault(1 << (k - 1).bit_length(), []).append(i)
        self.cat_widths = sorted(groups)
        order_c: list[int] = []
        for w in self.cat_widths:
            members = groups[w]
            pad = torch.full((len(members), w), self.n_onehot, dtype=torch.long)
            for r, i in enumerate(members):
                pad[r, :card[i]] = torch.arange(offsets[i], offsets[i] + card[i])
            self.register_buffer(f"cat_gather_{w}", pad, persistent=False)
            self.register_buffer(f"cat_valid_{w}", pad < self.n_onehot, persistent=False)
            self.register_buffer(f"cat_members_{w}", torch.tensor(members, dtype=torch.long),
                                 persistent=False)
            order_c += members
        inverse_c = [0] * len(order_c)  # groups' concatenated columns -> categorical order
        for pos, i in enumerate(order_c):
            inverse_c[i] = pos
        self.register_buffer("cat_inverse", torch.tensor(inverse_c, dtype=torch.long),
                             persistent=False)
        # a column never observed in training: rarer than one in the training rows (the most
        # observed cells of any column), not log(0 + 1) = 0
        rows = max(config.n_observed, default=0)
        unseen = [math.log((config.n_observed[j] or rows) + 1.0) for j in cat]
        self.register_buffer("unseen_floor", torch.tensor(unseen, dtype=torch.float32),
                             persistent=False)
        unseen_b = [math.log((config.n_observed[j] or rows) + 1.0) for j in boo]
        self.register_buffer("unseen_floor_b", torch.tensor(unseen_b, dtype=torch.float32),
                             persistent=False)
        order = num + boo + cat  # column order of the concatenated per-kind terms
        inverse = [0] * len(order)
        for pos, j in enumerate(order):
            inverse[j] = pos
        self.register_buffer("inverse", torch.tensor(inverse, dtype=torch.long),
                             persistent=False)
        d_in = self.n_num + self.n_bool + self.n_onehot + len(kinds)
        self.n_params = 2 * self.n_num + self.n_bool + self.n_onehot
        h, latent = list(config.hidden_dims), config.latent_dim
        self.encoder = mlp([d_in, *h, 2 * latent], config.activation, config.dropout)
        self.decoder = mlp([latent, *reversed(h), self.n_params], config.activation,
                           config.dropout)

    # -- helpers -------------------------------------------------------------------------------
    def _split(self, loc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``loc`` (..., P) -> numeric means, log-variances (..., Cn), boolean logits (..., Cb)."""
        n, b = self.n_num, self.n_bool
        mean = loc[..., :n]
        logvar = decoder_logvar(loc[..., n:2 * n], self.config.logvar_floor)
        return mean, logvar, loc[..., 2 * n:2 * n + b]

    def _cat_groups(self, loc: torch.Tensor
                    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per cardinality group: the columns (n_g,) (positions among the categorical ones),
        their log-probabilities (..., n_g, W_g) (-inf on padding) and the padding mask
        (n_g, W_g) (True: a real category)."""
        flat = loc[..., 2 * self.n_num + self.n_bool:]  # (..., sum K)
        flat = torch.cat([flat, torch.full_like(flat[..., :1], -math.inf)], dim=-1)
        return [(getattr(self, f"cat_members_{w}"),
                 torch.log_softmax(flat[..., getattr(self, f"cat_gather_{w}")], dim=-1),
                 getattr(self, f"cat_valid_{w}")) for w in self.cat_widths]

    # -- the interface every anovae network shares ---------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``x`` (B, C) -> ``mu`` (B, L), ``logvar`` (B, L)."""
        rate = self.config.mask_rate
        if self.training and rate > 0:  # hide random cells (training only; see the module doc)
            x = x.masked_fill(torch.rand(x.shape, device=x.device) < rate, math.nan)
        missing = torch.isnan(x)  # (B, C)
        xf = torch.nan_to_num(x, nan=0.0)
        codes = xf[:, self.cat_idx]  # (B, Cc)
        known = ~missing[:, self.cat_idx] & (codes >= 0)
        slot = torch.where(known, self.cat_offset + codes.clamp_min(0).long(),
                           torch.full_like(codes, self.n_onehot, dtype=torch.long))
        onehot = x.new_zeros(x.shape[0], self.n_onehot + 1)
        onehot.scatter_(1, slot, 1.0)
        boo = xf[:, self.bool_idx]  # (B, Cb): 0, 1, or -1 for an unseen value
        flags = missing.clone()
        flags[:, self.cat_idx] |= ~known
        flags[:, self.bool_idx] |= boo < 0
        # asinh: linear near 0, logarithmic in the tails, so a heavy-tailed column (byte counts
        # scaled by a small spread reach 1e5) cannot blow up the encoder (its KL overflows);
        # clipped to the training range: a value beyond it (1e12 bytes) would move the code
        # where no row was trained, and the decoder would then mispredict the *other* columns
        # (the explanation blamed them); clipped, the code stays where such rows are, and the
        # extreme value is charged to its own column by the likelihood, which sees it unclipped
        num = torch.maximum(torch.minimum(torch.asinh(xf[:, self.num_idx]), self.num_hi),
                            self.num_lo)
        h = torch.cat([num, boo.clamp_min(0.0),
                       onehot[:, :self.n_onehot], flags.to(x.dtype)], dim=1)
        mu, raw_logvar = self.encoder(h).chunk(2, dim=-1)
        return mu, posterior_logvar(raw_logvar)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        """``z`` (..., L) -> ``loc`` (..., P): every column's parameters, packed."""
        return self.decoder(z), None

    def mean(self, loc: torch.Tensor) -> torch.Tensor:
        """Typical value per column (..., C) in code units: ``sinh`` of the Gaussian mean (the
        median of the numeric value), the Bernoulli probability, the most likely category."""
        mean, _, logits_b = self._split(loc)
        cats = [logp.argmax(-1).to(loc.dtype) for _, logp, _ in self._cat_groups(loc)]
        parts = [torch.sinh(mean), torch.sigmoid(logits_b),
                 torch.cat([*cats, loc.new_zeros(*loc.shape[:-1], 0)], dim=-1
                           )[..., self.cat_inverse]]
        return torch.cat(parts, dim=-1)[..., self.inverse]

    def nll(self, x: torch.Tensor, loc: torch.Tensor, logvar: torch.Tensor | None = None
            ) -> torch.Tensor:
        """Per-column ``-log p(x_j | z)``: codes ``x`` (B, C), ``loc`` (..., B, P) -> (..., B, C).

        Missing cells get the detached expected value (entropy) and unseen categories the
        maximal surprise; see the module docstring.
        """
        del logvar  # packed into loc
        observed = ~torch.isnan(x)  # (B, C)
        xf = torch.nan_to_num(x, nan=0.0)
        mean, lv, logits_b = self._split(loc)
        # numeric: Gaussian on asinh(x); entropy 0.5 * (log 2 pi + 1 + logvar)
        nll_n = gaussian_nll(torch.asinh(xf[:, self.num_idx]), mean, lv)
        ent_n = (0.5 * (_LOG_2PI + 1.0 + lv)).detach()
        nll_n = torch.where(observed[:, self.num_idx], nll_n, ent_n)
        # boolean: Bernoulli; entropy = its NLL at x = sigmoid(logit); a value other than 0/1
        # (-1) gets the maximal surprise, as an unseen category
        boo = xf[:, self.bool_idx]
        nll_b = bernoulli_nll(boo.clamp(0.0, 1.0), logits_b)
        ent_b = bernoulli_nll(torch.sigmoid(logits_b), logits_b).detach()
        worst_b = torch.maximum(F.softplus(logits_b), F.softplus(-logits_b))
        nll_b = torch.where(boo < 0, torch.maximum(worst_b, self.unseen_floor_b.to(loc.dtype)),
                            nll_b)
        nll_b = torch.where(observed[:, self.bool_idx], nll_b, ent_b)
        # categorical: softmax; unseen codes (< 0) get the maximal surprise; by cardinality group
        codes_all = xf[:, self.cat_idx]  # (B, Cc)
        seen_all = observed[:, self.cat_idx]
        floor_all = self.unseen_floor.to(loc.dtype)
        parts = []
        for members, logp_c, valid in self._cat_groups(loc):
            codes = codes_all[:, members]  # (B, n_g)
            nll_c = categorical_nll(codes.clamp_min(0), logp_c)
            ent_c = torch.special.entr(logp_c.exp()).sum(-1).detach()
            worst = (-logp_c).masked_fill(~valid, -math.inf).amax(-1)  # (..., B, n_g)
            surprise = torch.maximum(worst, floor_all[members])
            nll_c = torch.where(codes < 0, surprise, nll_c)
            parts.append(torch.where(seen_all[:, members], nll_c, ent_c))
        nll_c = torch.cat([*parts, nll_b.new_zeros(*nll_b.shape[:-1], 0)], dim=-1
                          )[..., self.cat_inverse]
        return torch.cat([nll_n, nll_b, nll_c], dim=-1)[..., self.inverse]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction: the expected codes at ``z = mu``. (B, C) -> (B, C)."""
        mu, _ = self.encode(x)
        loc, _ = self.decode(mu)
        return self.mean(loc)
