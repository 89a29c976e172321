"""Pooling functions against plain-loop references, on random tensors and paddings."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import POOLINGS, cls_pool, l2_normalise, last_token_pool, mean_pool, pool


@st.composite
def padded_batches(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, list[int], str]:
    """A random ``hidden[B, T, H]``, the real lengths of its rows, a side and its mask."""
    batch_size = draw(st.integers(1, 5))
    hidden_size = draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(1, 6), min_size=batch_size, max_size=batch_size))
    side = draw(st.sampled_from(["left", "right"]))
    seed = draw(st.integers(0, 2**16))
    padded_length = max(lengths) + draw(st.integers(0, 2))
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch_size, padded_length, hidden_size, generator=generator)
    mask = torch.zeros(batch_size, padded_length, dtype=torch.long)
    for row, length in enumerate(lengths):
        if side == "right":
            mask[row, :length] = 1
        else:
            mask[row, padded_length - length :] = 1
    return hidden, mask, lengths, side


def _real_tokens(hidden: torch.Tensor, mask: torch.Tensor, row: int) -> torch.Tensor:
    return hidden[row][mask[row].bool()]  # [length, H]


@settings(max_examples=60, deadline=None)
@given(padded_batches())
def test_poolings_match_per_row_references_for_both_padding_sides(batch) -> None:
    hidden, mask, lengths, _side = batch
    for row, length in enumerate(lengths):
        tokens = _real_tokens(hidden, mask, row)
        assert tokens.shape[0] == length
        torch.testing.assert_close(mean_pool(hidden, mask)[row], tokens.mean(dim=0))
        torch.testing.assert_close(cls_pool(hidden, mask)[row], tokens[0])
        torch.testing.assert_close(last_token_pool(hidden, mask)[row], tokens[-1])


@settings(max_examples=40, deadline=None)
@given(padded_batches())
def test_padded_states_do_not_leak_into_any_pooling(batch) -> None:
    hidden, mask, _lengths, _side = batch
    poisoned = hidden.masked_fill(~mask.bool().unsqueeze(-1), float("nan"))
    for name in POOLINGS:
        assert not torch.isnan(pool(name, poisoned, mask)).any(), name
        torch.testing.assert_close(pool(name, poisoned, mask), pool(name, hidden, mask))


@settings(max_examples=40, deadline=None)
@given(padded_batches())
def test_l2_normalise_gives_unit_rows_in_the_same_direction(batch) -> None:
    hidden, mask, _lengths, _side = batch
    pooled = mean_pool(hidden, mask)
    unit = l2_normalise(pooled)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(unit.shape[0]))
    cosine = torch.nn.functional.cosine_similarity(unit, pooled, dim=-1)
    torch.testing.assert_close(cosine, torch.ones(unit.shape[0]))


def test_mean_pool_of_a_row_without_tokens_is_zero_and_stays_zero_after_normalising() -> None:
    hidden = torch.ones(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    pooled = l2_normalise(mean_pool(hidden, mask))
    assert torch.equal(pooled[1], torch.zeros(4))
    torch.testing.assert_close(pooled[0].norm(), torch.tensor(1.0))


def test_shapes_and_names_are_checked() -> None:
    with pytest.raises(ValueError, match=r"expected hidden \[B, T, H\] and mask \[B, T\]"):
        mean_pool(torch.zeros(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="expected one of mean, cls, last-token"):
        pool("max", torch.zeros(1, 1, 1), torch.ones(1, 1))
