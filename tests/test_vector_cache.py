"""CachedEncoder: each text encoded once per model version, in memory and across restarts."""

from __future__ import annotations

import numpy as np
import pytest

from models.encoder import TextEncoder
from models.vector_cache import CachedEncoder

TITLES = [
    "Toy Story (1995) Animation Children's Comedy",
    "Jumanji (1995) Adventure Children's Fantasy",
    "Grumpier Old Men (1995) Comedy Romance",
    "Heat (1995) Action Crime Thriller",
    "Sabrina (1995) Comedy Romance",
]


@pytest.fixture(scope="module")
def cls_encoder() -> TextEncoder:
    """MiniLM with CLS pooling: same dimension as the mean-pooled one, another model_version."""
    return TextEncoder(device="cpu", pooling="cls")


def test_second_call_is_all_hits_with_identical_vectors(minilm_encoder) -> None:
    cached = CachedEncoder(minilm_encoder)
    encoded_before = minilm_encoder.texts_encoded
    first = cached.encode(TITLES)
    assert (cached.hits, cached.misses) == (0, len(TITLES))
    np.testing.assert_allclose(first, minilm_encoder.encode(TITLES), atol=1e-6)

    encoded_before = minilm_encoder.texts_encoded
    second = cached.encode(TITLES[::-1])
    assert (cached.hits, cached.misses) == (len(TITLES), len(TITLES))
    assert minilm_encoder.texts_encoded == encoded_before  # the model did not run
    assert np.array_equal(second, first[::-1])
    assert cached.dim == 384
    assert cached.model_version == minilm_encoder.model_version


def test_duplicates_inside_one_call_are_encoded_once(minilm_encoder) -> None:
    cached = CachedEncoder(minilm_encoder)
    texts = [TITLES[0], TITLES[1], TITLES[0], TITLES[0], TITLES[1]]
    encoded_before = minilm_encoder.texts_encoded
    vectors = cached.encode(texts)
    assert minilm_encoder.texts_encoded - encoded_before == 2
    assert cached.misses == 5
    assert np.array_equal(vectors[0], vectors[2]) and np.array_equal(vectors[0], vectors[3])
    assert np.array_equal(vectors[1], vectors[4])
    assert not np.array_equal(vectors[0], vectors[1])


def test_persistent_store_survives_close_and_reopen(minilm_encoder, tmp_path) -> None:
    with CachedEncoder(minilm_encoder, path=tmp_path / "vectors") as cached:
        first = cached.encode(TITLES)

    encoded_before = minilm_encoder.texts_encoded
    reopened = CachedEncoder(minilm_encoder, path=tmp_path / "vectors")
    assert len(reopened) == 0  # nothing in memory yet: it must come from the store
    again = reopened.encode([*TITLES, "A text never seen before"])
    assert reopened.hits == reopened.store_hits == len(TITLES)
    assert reopened.misses == 1
    assert minilm_encoder.texts_encoded - encoded_before == 1
    assert np.array_equal(again[: len(TITLES)], first)  # bit-exact float32 round trip
    reopened.close()
    with pytest.raises(RuntimeError, match="is closed"):
        reopened.encode(TITLES)


def test_another_model_version_does_not_hit(minilm_encoder, cls_encoder, tmp_path) -> None:
    assert cls_encoder.model_version != minilm_encoder.model_version
    with CachedEncoder(minilm_encoder, path=tmp_path / "vectors") as cached:
        mean_vectors = cached.encode(TITLES)
    with CachedEncoder(cls_encoder, path=tmp_path / "vectors") as cached:
        cls_vectors = cached.encode(TITLES)
        assert (cached.hits, cached.misses) == (0, len(TITLES))
    np.testing.assert_allclose(cls_vectors, cls_encoder.encode(TITLES), atol=1e-6)
    assert np.abs(cls_vectors - mean_vectors).max() > 0.05


def test_another_token_limit_does_not_hit(minilm_encoder) -> None:
    long_text = "A slow story about a lighthouse keeper and the sea around him. " * 20
    cached = CachedEncoder(minilm_encoder)
    default_limit = cached.encode([long_text])
    short_limit = cached.encode([long_text], max_tokens=16)
    assert cached.misses == 2
    assert default_limit[0] @ short_limit[0] < 0.999
    cached.encode([long_text], max_tokens=16)
    cached.encode([long_text], max_tokens=minilm_encoder.max_tokens)  # same as the default
    assert cached.hits == 2


def test_memory_is_a_bounded_lru(minilm_encoder) -> None:
    cached = CachedEncoder(minilm_encoder, memory_items=2)
    cached.encode(TITLES[:2])
    cached.encode(TITLES[:1])  # TITLES[0] is now the most recently used
    cached.encode(TITLES[2:3])  # evicts TITLES[1]
    assert len(cached) == 2
    hits_before, misses_before = cached.hits, cached.misses
    cached.encode(TITLES[:1])
    assert cached.hits == hits_before + 1
    cached.encode(TITLES[1:2])
    assert cached.misses == misses_before + 1

    no_memory = CachedEncoder(minilm_encoder, memory_items=0)
    no_memory.encode(TITLES[:2])
    no_memory.encode(TITLES[:2])
    assert (len(no_memory), no_memory.hits, no_memory.misses) == (0, 0, 4)


def test_returned_arrays_do_not_alias_the_cache(minilm_encoder) -> None:
    cached = CachedEncoder(minilm_encoder)
    vectors = cached.encode(TITLES[:2])
    expected = vectors.copy()
    vectors[:] = 0.0
    assert np.array_equal(cached.encode(TITLES[:2]), expected)


def test_empty_input_and_bad_input(minilm_encoder) -> None:
    cached = CachedEncoder(minilm_encoder)
    assert cached.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="got a single str"):
        cached.encode("one text")
    with pytest.raises(TypeError, match=r"texts\[0\] is a NoneType; expected str"):
        cached.encode([None])
    with pytest.raises(ValueError, match="memory_items must be >= 0"):
        CachedEncoder(minilm_encoder, memory_items=-1)
