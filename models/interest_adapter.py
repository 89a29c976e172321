r"""Interest adapter: a small map learned from behaviour over the frozen encoder's item vectors.

Why: pooled frozen MiniLM vectors of MovieLens users are so alike that every
user lands in one cluster, and the text adds ~0.007 HR@10 (docs/evaluation.md,
issue 12). The encoder knows what a title *says*, not what people who watch it
watch next. The adapter keeps the encoder frozen and learns a few parameters
from the stream itself, online, so that ``cos(interest, item)`` — the signal
the engine blends, clusters and builds facets on — points at the next item.

Model. An item ``i`` with frozen unit text vector :math:`x_i \in R^D` is placed
at

.. math:: z_i = W x_i + e_i,

with :math:`W \in R^{d \times D}` (initialised to the identity when ``d = D``,
else to the top ``d`` principal directions of the first items seen) and a
per-item residual :math:`e_i \in R^d` (optional; 0 for a new item, so a new
item is placed from its text alone and can be recommended at once). A window
``i_1 … i_n`` (oldest first) gives the query

.. math:: q = \sum_{r=0}^{n-1} p^r z_{i_{n-r}}  \quad (+\, U h_n \text{ with } ``sequence="gru"``),

where ``p`` is the position decay and :math:`h_n` a GRU's last state over the
window (``U`` starts at 0, so the GRU starts as the pooled model). Scores are
cosines, the engine's content signal: :math:`s(q, j) = \cos(q, z_j)/\tau`
(or, with ``cosine=False``, :math:`\hat q \cdot z_j / \tau`).

Training, one mini-batch per :meth:`learn_many` call, in event-time order:
each pair (window before → next item) is a sampled softmax over the batch's
own targets (in-batch negatives, drawn ∝ popularity) plus ``n_negatives``
items drawn uniformly from the catalogue, with the logQ correction for that
mixed proposal, :math:`s_j - \log Q_j`, :math:`Q_j = U/N + B \hat p_j`
(:math:`\hat p_j` the smoothed share of targets seen so far; Yi et al. 2019).
Accidental hits (a negative equal to the target) are masked. ``W`` and the
GRU take Adam steps; residual rows take sparse row-wise Adagrad steps, so the
catalogue can grow (:meth:`add_items`) without touching optimiser state.

With ``residual=False, sequence="mean"`` the adapter is linear:
:math:`q \cdot z_j = (W^\top q) \cdot x_j`, so a vector index built on the
frozen vectors answers adapted queries when asked with :meth:`frozen_queries`
(inner product; the cosine differs only by the item's norm :math:`\|W x_j\|`).
``dim=None`` is the frozen space itself (identity, nothing learned) for ablations.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

__all__ = ["InterestAdapter"]

Sequencer = Literal["mean", "gru"]


class InterestAdapter:
    """Behaviour-trained map of frozen item vectors (see the module docstring for the maths).

    Parameters
    ----------
    dim
        ``d``, the adapted space's dimension; ``None`` keeps the frozen space (identity).
    residual
        Learn a per-item residual ``e_i`` (breaks the linear, frozen-index property).
    sequence
        ``"mean"`` (position-decayed pooling) or ``"gru"`` (pooling plus a GRU over the window).
    window
        Most recent items of a context used.
    position_decay
        ``p``: weight of an item relative to the next newer one in the pooled query.
    temperature
        ``τ`` of the cosine softmax.
    n_negatives
        Uniform catalogue negatives per batch (shared by its examples).
    lr
        Adam learning rate of ``W`` and the GRU.
    residual_lr
        Adagrad learning rate of the residual rows.
    cosine
        Score items by cosine (unit item vectors); ``False``: by inner product with the
        unit query, which an index over ``[x_j, e_j]`` queried with ``[Wᵀq, q]``
        reproduces exactly (:meth:`transform` and :meth:`item_matrix` then skip the norm).
    seed
        Seeds the initialisation and the negative sampling.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(6, 8))
    >>> adapter = InterestAdapter(dim=4, seed=0)
    >>> adapter.add_items(["a", "b", "c", "d", "e", "f"], x)
    >>> loss = adapter.learn_many([["a", "b"], ["c"]], ["d", "e"], t=[1.0, 2.0])
    >>> adapter.transform(x[:2], item_ids=["a", "b"]).shape, adapter.n_items
    ((2, 4), 6)
    >>> adapter.add_items(["g"], rng.normal(size=(1, 8)))    # the catalogue grows online
    >>> adapter.transform_queries([["a", "g"], []]).round(3)[1].tolist()
    [0.0, 0.0, 0.0, 0.0]
    >>> InterestAdapter().params()["dim"]
    128
    """

    def __init__(
        self,
        dim: int | None = 128,
        residual: bool = True,
        sequence: Sequencer = "mean",
        window: int = 50,
        position_decay: float = 0.9,
        temperature: float = 0.05,
        n_negatives: int = 1024,
        lr: float = 3e-3,
        residual_lr: float = 0.05,
        cosine: bool = True,
        seed: int = 0,
    ) -> None:
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be positive or None, got {dim}")
        if sequence not in ("mean", "gru"):
            raise ValueError(f"sequence must be 'mean' or 'gru', got {sequence!r}")
        if dim is None and (residual or sequence != "mean"):
            raise ValueError("dim=None is the frozen space: residual=False, sequence='mean'")
        if not 0 < position_decay <= 1 or temperature <= 0 or window < 1:
            raise ValueError("need 0 < position_decay <= 1, temperature > 0, window >= 1")
        self.dim = dim
        self.residual = residual
        self.sequence: Sequencer = sequence
        self.window = window
        self.position_decay = position_decay
        self.temperature = temperature
        self.n_negatives = n_negatives
        self.lr = lr
        self.residual_lr = residual_lr
        self.cosine = cosine
        self.seed = seed
        self._rows: dict[Hashable, int] = {}
        self._n = 0
        self._x = torch.zeros(0, 0)  # frozen vectors, [capacity, D]
        self._e = torch.zeros(0, 0)  # residuals, [capacity, d]
        self._e_sq = torch.zeros(0, 0)  # Adagrad accumulators of the residuals
        self._counts = torch.zeros(0, dtype=torch.float64)  # targets seen per item
        self._w: nn.Linear | None = None
        self._gru: nn.GRU | None = None
        self._gru_out: nn.Linear | None = None
        self._params: list[nn.Parameter] = []
        self._adam: list[tuple[torch.Tensor, torch.Tensor]] = []  # first, second moments
        self._steps = 0
        self._gen = torch.Generator().manual_seed(seed)
        self._last_t = -np.inf
        self.n_learned = 0

    # ------------------------------------------------------------------ introspection

    def params(self) -> dict[str, Any]:
        """The constructor's arguments (River's ``_get_params``)."""
        names = [
            "dim",
            "residual",
            "sequence",
            "window",
            "position_decay",
            "temperature",
            "n_negatives",
            "lr",
            "residual_lr",
            "cosine",
            "seed",
        ]
        return {name: getattr(self, name) for name in names}

    def clone(self) -> InterestAdapter:
        """A fresh, untrained adapter with the same parameters."""
        return InterestAdapter(**self.params())

    @property
    def n_items(self) -> int:
        return self._n

    @property
    def out_dim(self) -> int:
        return self.dim if self.dim is not None else self._x.shape[1]

    @property
    def is_linear(self) -> bool:
        """Queries can be answered by a vector index over the frozen vectors."""
        return not self.residual and self.sequence == "mean"

    # ------------------------------------------------------------------ catalogue

    def add_items(self, item_ids: Iterable[Hashable], vectors: np.ndarray) -> None:
        """Add items (residual 0: placed from their text) or replace known items' vectors."""
        vectors = np.asarray(vectors, np.float32)
        ids = list(item_ids)
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for vectors of shape {vectors.shape}")
        if not ids:
            return
        x = torch.from_numpy(_unit(vectors))
        if self._w is None and self.dim is not None:
            self._build(x)
        elif not self._n:
            self._x = torch.zeros(0, x.shape[1])
        rows = []
        for item_id in ids:
            row = self._rows.get(item_id)
            if row is None:
                row = self._rows[item_id] = self._n
                self._n += 1
            rows.append(row)
        self._grow(self._n)
        self._x[torch.tensor(rows)] = x

    def rows(self, item_ids: Iterable[Hashable]) -> np.ndarray:
        """Catalogue rows of known items (a ``KeyError`` for unknown ones)."""
        return np.fromiter((self._rows[i] for i in item_ids), dtype=np.int64)

    # ------------------------------------------------------------------ learning

    def learn_many(
        self,
        contexts: Sequence[Sequence[Hashable]],
        targets: Sequence[Hashable],
        t: Sequence[float] | np.ndarray | None = None,
    ) -> float:
        """One mini-batch step on (window before → next item) pairs, in event-time order.

        Pairs with an empty context only count their target's popularity.
        Returns the batch's mean loss (0.0 when nothing was learned).
        """
        if len(contexts) != len(targets):
            raise ValueError(f"{len(contexts)} contexts for {len(targets)} targets")
        if t is not None and len(t):
            times = np.asarray(t, np.float64)
            if times[0] < self._last_t or np.any(np.diff(times) < 0):
                raise ValueError("learn_many needs events in event-time order")
            self._last_t = float(times[-1])
        target_rows = torch.from_numpy(self.rows(targets))
        keep = [b for b, c in enumerate(contexts) if len(c)]
        loss_value = 0.0
        if self._w is not None and keep:
            loss_value = self._step([contexts[b] for b in keep], target_rows[keep])
        self._counts.index_add_(0, target_rows, torch.ones(len(target_rows), dtype=torch.float64))
        self.n_learned += len(targets)
        return loss_value

    def _step(self, contexts: Sequence[Sequence[Hashable]], target_rows: torch.Tensor) -> float:
        padded, lengths = self._pad(contexts)
        n, batch = self._n, len(target_rows)
        uniform = torch.randint(0, n, (self.n_negatives,), generator=self._gen)
        candidates = torch.cat([target_rows, uniform])
        used, inverse = torch.unique(torch.cat([padded.flatten(), candidates]), return_inverse=True)
        residual = self._e[used].clone().requires_grad_(self.residual)
        z = self._map(self._x[used]) + residual
        z_context = z[inverse[: padded.numel()]].view(*padded.shape, -1)
        z_candidates = z[inverse[padded.numel() :]]
        query = self._query(z_context, lengths)
        logits = _unit_t(query) @ self._item_norm(z_candidates).T / self.temperature
        share = (self._counts[candidates] + 1.0) / (self._counts.sum() + n)
        log_q = torch.log(self.n_negatives / n + batch * share).float()
        logits = logits - log_q
        hit = candidates[None, :] == target_rows[:, None]
        hit[torch.arange(batch), torch.arange(batch)] = False
        logits = logits.masked_fill(hit, -torch.inf)
        loss = nn.functional.cross_entropy(logits, torch.arange(batch))
        for param in self._params:
            param.grad = None
        loss.backward()
        self._adam_step()
        if self.residual and residual.grad is not None:
            with torch.no_grad():
                grad = residual.grad
                self._e_sq[used] += grad * grad
                self._e[used] -= self.residual_lr * grad / (self._e_sq[used].sqrt() + 1e-8)
        return float(loss.detach())

    # ------------------------------------------------------------------ inference

    def transform(
        self, vectors: np.ndarray, item_ids: Sequence[Hashable] | None = None
    ) -> np.ndarray:
        """Frozen vectors → adapted vectors (unit if ``cosine``); known ids get their residual."""
        x = torch.from_numpy(_unit(np.asarray(vectors, np.float32)))
        with torch.no_grad():
            z = self._map(x)
            if item_ids is not None and self.residual:
                known = [(k, self._rows[i]) for k, i in enumerate(item_ids) if i in self._rows]
                if known:
                    at, rows = (torch.tensor(c) for c in zip(*known, strict=True))
                    z[at] += self._e[rows]
            return self._item_norm(z).numpy()

    def item_matrix(self, unit: bool | None = None) -> np.ndarray:
        """Adapted vectors of every known item, ``[n_items, d]``, in catalogue-row order.

        ``unit`` (default: ``cosine``) normalises them; ``unit=False`` gives ``W x_j + e_j``,
        what an inner-product index over ``[x_j, e_j]`` queried with ``[Wᵀq, q]`` scores.
        """
        with torch.no_grad():
            z = self._map(self._x[: self._n]) + self._e[: self._n]
            return (_unit_t(z) if (self.cosine if unit is None else unit) else z).numpy()

    def transform_queries(self, contexts: Sequence[Sequence[Hashable]]) -> np.ndarray:
        """Windows (oldest first) → unit query vectors ``[B, d]``; zeros for an empty window."""
        out = np.zeros((len(contexts), self.out_dim), np.float32)
        keep = [b for b, c in enumerate(contexts) if len(c)]
        if not keep:
            return out
        padded, lengths = self._pad([contexts[b] for b in keep])
        with torch.no_grad():
            z = self._map(self._x[padded]) + self._e[padded]
            out[keep] = _unit_t(self._query(z, lengths)).numpy()
        return out

    def frozen_queries(self, queries: np.ndarray) -> np.ndarray:
        """Adapted queries → frozen-space queries ``Wᵀq`` for an index over frozen vectors.

        Only for a linear adapter: ``(Wᵀq)·x_j = q·z_j``.
        """
        if not self.is_linear:
            raise ValueError("frozen_queries needs residual=False and sequence='mean'")
        if self._w is None:
            return np.asarray(queries, np.float32)
        with torch.no_grad():
            return (torch.from_numpy(np.asarray(queries, np.float32)) @ self._w.weight).numpy()

    # ------------------------------------------------------------------ internals

    def _build(self, first: torch.Tensor) -> None:
        assert self.dim is not None
        big_d = first.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._w = nn.Linear(big_d, self.dim, bias=False)
            if self.dim == big_d:
                init = torch.eye(big_d)
            else:  # principal directions of the first items; random ones fill a short batch
                centred = first - first.mean(dim=0)
                _, _, vh = torch.linalg.svd(centred, full_matrices=False)
                fill = torch.linalg.qr(torch.randn(big_d, self.dim))[0].T
                init = torch.cat([vh, fill])[: self.dim]
            with torch.no_grad():
                self._w.weight.copy_(init)
            params = list(self._w.parameters())
            if self.sequence == "gru":
                self._gru = nn.GRU(self.dim, self.dim, batch_first=True)
                self._gru_out = nn.Linear(self.dim, self.dim, bias=False)
                nn.init.zeros_(self._gru_out.weight)
                params += list(self._gru.parameters()) + list(self._gru_out.parameters())
        self._params = params
        self._adam = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        self._x = torch.zeros(0, big_d)

    def _adam_step(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        """Adam (Kingma & Ba 2015), by hand: ``torch.optim``'s first import costs ~20 s."""
        self._steps += 1
        correction1, correction2 = 1 - beta1**self._steps, 1 - beta2**self._steps
        with torch.no_grad():
            for param, (m, v) in zip(self._params, self._adam, strict=True):
                if param.grad is None:
                    continue
                m.mul_(beta1).add_(param.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
                denom = (v / correction2).sqrt_().add_(eps)
                param.addcdiv_(m, denom, value=-self.lr / correction1)

    def _grow(self, n: int) -> None:
        capacity = self._x.shape[0]
        if n <= capacity:
            return
        new = max(n, 2 * capacity, 64)
        big_d, d = self._x.shape[1], self.out_dim
        self._x = torch.cat([self._x, torch.zeros(new - capacity, big_d)])
        self._e = torch.cat([self._e.reshape(capacity, d), torch.zeros(new - capacity, d)])
        self._e_sq = torch.cat([self._e_sq.reshape(capacity, d), torch.zeros(new - capacity, d)])
        self._counts = torch.cat([self._counts, torch.zeros(new - capacity, dtype=torch.float64)])

    def _item_norm(self, z: torch.Tensor) -> torch.Tensor:
        return _unit_t(z) if self.cosine else z

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._w is None else self._w(x)

    def _pad(self, contexts: Sequence[Sequence[Hashable]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded rows ``[B, L]`` (oldest first, pad = row 0) and lengths."""
        windows = [self.rows(c[-self.window :]) for c in contexts]
        lengths = torch.tensor([len(w) for w in windows])
        padded = torch.zeros(len(windows), int(lengths.max()), dtype=torch.int64)
        for b, w in enumerate(windows):
            padded[b, : len(w)] = torch.from_numpy(w)
        return padded, lengths

    def _query(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[B, L, d]`` window vectors (right-padded) → ``[B, d]`` queries."""
        position = lengths[:, None] - 1 - torch.arange(z.shape[1])[None, :]  # 0 = newest
        weights = torch.where(position >= 0, self.position_decay ** position.clamp(min=0), 0.0)
        query = (weights[:, :, None] * z).sum(dim=1)
        if self._gru is not None and self._gru_out is not None:
            packed = nn.utils.rnn.pack_padded_sequence(
                z, lengths, batch_first=True, enforce_sorted=False
            )
            _, last = self._gru(packed)
            query = query + self._gru_out(last[0])
        return query


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), np.float32)


def _unit_t(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
