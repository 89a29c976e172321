"""Pooling: turn a transformer's token states into one unit vector per text.

Small pure functions over tensors, with the shapes they take and give. ``B`` is
the batch size, ``T`` the padded sequence length and ``H`` the hidden size; a
``mask`` is the tokenizer's ``attention_mask`` (1 for a real token, 0 for
padding) and may pad on either side.

* ``mean``: average of the real tokens' states (sentence-transformers models
  such as all-MiniLM-L6-v2).
* ``cls``: the first token's state (BERT-style ``[CLS]`` models, BGE).
* ``last-token``: the state of the last real token, the only one that has seen
  the whole text in a causal (decoder-only) LLM (e5-mistral, Qwen3-Embedding).

Pooled vectors are then L2-normalised, so a dot product is a cosine.

References
----------
Reimers, N. and Gurevych, I. (2019). Sentence-BERT: Sentence Embeddings using
Siamese BERT-Networks. EMNLP.
Wang, L. et al. (2024). Improving Text Embeddings with Large Language Models. ACL.

"""

from __future__ import annotations

import torch

__all__ = ["POOLINGS", "cls_pool", "l2_normalise", "last_token_pool", "mean_pool", "pool"]

POOLINGS: tuple[str, ...] = ("mean", "cls", "last-token")
"""Pooling names understood by :func:`pool`."""


def _check_shapes(hidden: torch.Tensor, mask: torch.Tensor) -> None:
    if hidden.dim() != 3 or mask.dim() != 2 or hidden.shape[:2] != mask.shape:
        raise ValueError(
            f"expected hidden [B, T, H] and mask [B, T], got hidden {tuple(hidden.shape)} "
            f"and mask {tuple(mask.shape)}"
        )


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the states of the real tokens: ``hidden[B, T, H], mask[B, T] -> [B, H]``.

    Padded positions are excluded (set to zero before summing, so a NaN or an
    inf in a padded state cannot leak in). A row without any real token gives
    a zero vector.

    >>> hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    >>> mean_pool(hidden, torch.tensor([[1, 1, 0]]))
    tensor([[2., 3.]])
    >>> mean_pool(hidden, torch.tensor([[0, 0, 0]]))
    tensor([[0., 0.]])
    """
    _check_shapes(hidden, mask)
    real = mask.bool().unsqueeze(-1)  # [B, T, 1]
    summed = hidden.masked_fill(~real, 0.0).sum(dim=1)  # [B, H]
    counts = real.sum(dim=1).clamp(min=1).to(hidden.dtype)  # [B, 1]
    return summed / counts


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first real token's state: ``hidden[B, T, H], mask[B, T] -> [B, H]``.

    For a right-padded batch that is position 0; for a left-padded one it is
    the first position whose mask is 1.

    >>> hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [5.0, 6.0]]])
    >>> cls_pool(hidden, torch.tensor([[1, 1], [0, 1]]))
    tensor([[1., 2.],
            [5., 6.]])
    """
    _check_shapes(hidden, mask)
    first = mask.bool().int().argmax(dim=1)  # [B]: index of the first 1 (0 if none)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last real token's state: ``hidden[B, T, H], mask[B, T] -> [B, H]``.

    Correct for right padding (last real token somewhere inside the row) and
    for left padding (last real token at ``T - 1``) alike: the index taken is
    the largest position whose mask is 1.

    >>> hidden = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [9.0, 9.0]],
    ...                        [[9.0, 9.0], [3.0, 3.0], [4.0, 4.0]]])
    >>> last_token_pool(hidden, torch.tensor([[1, 1, 0], [0, 1, 1]]))
    tensor([[2., 2.],
            [4., 4.]])
    """
    _check_shapes(hidden, mask)
    positions = torch.arange(mask.shape[1], device=mask.device)  # [T]
    last = (mask.bool() * positions).argmax(dim=1)  # [B]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def pool(name: str, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pool by name (one of :data:`POOLINGS`): ``hidden[B, T, H], mask[B, T] -> [B, H]``.

    >>> hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    >>> mask = torch.tensor([[1, 1]])
    >>> [pool(name, hidden, mask).tolist() for name in POOLINGS]
    [[[0.5, 0.5]], [[1.0, 0.0]], [[0.0, 1.0]]]
    >>> pool("max", hidden, mask)
    Traceback (most recent call last):
    ...
    ValueError: unknown pooling 'max'; expected one of mean, cls, last-token
    """
    if name == "mean":
        return mean_pool(hidden, mask)
    if name == "cls":
        return cls_pool(hidden, mask)
    if name == "last-token":
        return last_token_pool(hidden, mask)
    raise ValueError(f"unknown pooling {name!r}; expected one of {', '.join(POOLINGS)}")


def l2_normalise(vectors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each row to unit Euclidean length: ``[B, H] -> [B, H]``.

    A zero row stays zero (its norm is clamped to ``eps``).

    >>> l2_normalise(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    tensor([[0.6000, 0.8000],
            [0.0000, 0.0000]])
    """
    norms = vectors.norm(dim=-1, keepdim=True).clamp(min=eps)
    return vectors / norms
