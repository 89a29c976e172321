"""Shared test fixtures: the real MiniLM encoder and a tiny decoder-only LLM on disk.

Both are session-scoped and built only when a test asks for them.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_encoder():
    """The real all-MiniLM-L6-v2 from its PyPI package, on the CPU, in float32."""
    from models.encoder import TextEncoder

    return TextEncoder(device="cpu", dtype="float32", batch_size=8)


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama (hidden size 64) saved as a causal-LM checkpoint.

    It reuses MiniLM's tokenizer (saved into the same directory, with the
    model's vocabulary sized to match), so it needs nothing from a hub. Its
    weights come from ``torch.manual_seed(0)``, so every run builds the same model.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from models.encoder import default_model_path

    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
