"""Encoder throughput: driftrec's ``TextEncoder`` against a plain transformers forward loop.

The reference is what a user would write: for each slice of ``batch`` texts
in input order, ``tokenizer(..., padding=True, truncation=True)``, the model,
mean pooling over the mask, L2 normalisation. Same model, device, precision,
batch size and token limit as driftrec's encoder. Three workloads: short item
texts (~10 words), long ~100-word sequences, and mixed lengths (5-150 words),
where length bucketing should pay. Both produce the same vectors (checked).
Threads: torch's default for the process (all cores).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np
import torch

from models.encoder import TextEncoder
from models.pooling import l2_normalise, pool

# A fixed vocabulary of ordinary words: the texts need no dataset and are the same everywhere.
_VOCABULARY = """
the a of and to in for with on by from about movie film story drama comedy thriller
family love war space city night summer winter music dance kitchen coffee shoes jacket
camera phone garden travel river mountain ocean island journey secret detective crime
history science robot future ancient king queen friend school team game season light
dark red blue green small large new old classic modern quick quiet bright simple home
wireless leather cotton organic fresh sweet spicy wooden steel glass soft warm cold
running walking cooking reading writing playing watching building learning finding
"""
WORDS: tuple[str, ...] = tuple(_VOCABULARY.split())


def make_texts(n: int, min_words: int, max_words: int, seed: int) -> list[str]:
    """``n`` texts of ``min_words``-``max_words`` words drawn from :data:`WORDS`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_words, max_words + 1, size=n)
    return [" ".join(rng.choice(WORDS, size=int(length)).tolist()) for length in lengths]


class PlainTransformersEncoder:
    """The reference: batches in input order, each padded to its longest, mean pooled."""

    def __init__(self, encoder: TextEncoder) -> None:
        self.tokenizer, self.model = encoder.tokenizer, encoder.model
        self.device, self.max_tokens = encoder.device, encoder.max_tokens
        self.pooling = encoder.pooling

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int, max_tokens: int) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_tokens,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            out.append(l2_normalise(pool(self.pooling, hidden.float(), batch["attention_mask"])))
        return torch.cat(out).cpu().numpy()


def _timed(fn: Any, texts: list[str], repeats: int) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls of ``fn(texts)`` (after a warm-up) and its result."""
    fn(texts[:64])
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(texts)
        best = min(best, time.perf_counter() - started)
    return best, result


def run(
    size: str = "full",
    device: str = "cpu",
    dtype: str = "auto",
    batch_sizes: tuple[int, ...] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Items/s of both encoders on the three workloads at each batch size."""
    n_short, n_long, repeats = (1024, 128, 1) if size == "full" else (64, 16, 1)
    if batch_sizes is None:
        batch_sizes = (16, 32, 64) if device == "cpu" else (32, 128, 512)
    if size != "full":
        batch_sizes = batch_sizes[:1]
    if device != "cpu":
        n_short, n_long = n_short * 8, n_long * 8
    workloads = {
        "short (~10 words)": (make_texts(n_short, 8, 12, seed=1), 128),
        "long (~100 words)": (make_texts(n_long, 90, 110, seed=2), 256),
        "mixed (5-150 words)": (make_texts(n_long * 2, 5, 150, seed=3), 256),
    }
    rows = []
    for batch_size in batch_sizes:
        encoder = TextEncoder(device=device, dtype=dtype, batch_size=batch_size)
        reference = PlainTransformersEncoder(encoder)
        for workload, (texts, max_tokens) in workloads.items():
            ours_s, ours = _timed(partial(encoder.encode, max_tokens=max_tokens), texts, repeats)
            ref_s, ref = _timed(
                partial(reference.encode, batch_size=batch_size, max_tokens=max_tokens),
                texts,
                repeats,
            )
            row = {
                "workload": workload,
                "texts": len(texts),
                "batch": batch_size,
                "device": str(encoder.device),
                "dtype": str(encoder.dtype).removeprefix("torch."),
                "driftrec_per_s": len(texts) / ours_s,
                "reference_per_s": len(texts) / ref_s,
                "ratio": ref_s / ours_s,
                "max_abs_diff": float(np.abs(ours - ref).max()),
            }
            rows.append(row)
            if progress:
                print(
                    f"  {workload:<20} batch {batch_size:>3}: driftrec "
                    f"{row['driftrec_per_s']:>8,.0f}/s  plain transformers "
                    f"{row['reference_per_s']:>8,.0f}/s  ratio {row['ratio']:.2f}  "
                    f"max |Δ| {row['max_abs_diff']:.1e}",
                    flush=True,
                )
    return {
        "size": size,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
        "goal": {
            "worst_ratio": min(r["ratio"] for r in rows),
            "met": all(r["ratio"] >= 0.9 for r in rows),
        },
    }
