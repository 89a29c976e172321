"""The engine's one typed settings object, read from ``DRIFTREC_*`` variables.

Every part of the engine takes its parameters from here (passed down by the
caller); no module reads the environment on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DAY_S = 86_400.0

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "cart": 3.0,
    "purchase": 5.0,
    "rate": 3.0,
}


class EngineSettings(BaseSettings):
    """Settings of the recommendation engine (``DRIFTREC_<NAME>`` in the environment)."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTREC_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Field(Path("./data"), description="Where the RocksDB stores live.")
    blas_threads: int | None = Field(
        1,
        ge=1,
        description="Threads numpy's BLAS may use (None: library default). The engine's matrix "
        "products are small; with more threads than free cores OpenBLAS spins and a product "
        "takes 80x longer, so 1 is the safe default.",
    )

    # --- events -------------------------------------------------------------
    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="Weight of each event type; custom types may be added.",
    )
    rating_midpoint: float = Field(
        3.0,
        description="A `rate` event's weight is event_weights['rate'] * rating / rating_midpoint.",
    )
    rating_max: float = Field(5.0, gt=0, description="Largest accepted rating.")
    max_text_chars: int = Field(
        16_384, description="Longest accepted item_text / title / text field."
    )
    max_id_chars: int = Field(256, description="Longest accepted user_id / item_id.")

    # --- windows ------------------------------------------------------------
    window_size: int = Field(50, ge=1, le=10_000, description="N: events kept per user.")
    window_max_age_s: float = Field(30 * DAY_S, gt=0, description="T: oldest event kept, s.")
    seen_capacity: int = Field(
        5_000,
        ge=0,
        description="Most recent distinct items remembered per user for exclusion (consumed "
        "and dismissed).",
    )

    # --- business rules (models/item_rules.py) ------------------------------
    include_tags: list[str] = Field(
        default_factory=list,
        description="Only items with one of these tags are recommended (empty: no limit).",
    )
    exclude_tags: list[str] = Field(
        default_factory=list, description="Items with any of these tags are never recommended."
    )
    exclude_items: list[str] = Field(
        default_factory=list, description="Item ids never recommended."
    )

    # --- encoder ------------------------------------------------------------
    model_path: Path | None = Field(
        None, description="Local model directory; default all-MiniLM-L6-v2 from its PyPI package."
    )
    pooling: Literal["auto", "mean", "cls", "last-token"] = "auto"
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, …")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    encode_batch_size: int = Field(64, ge=1)
    max_tokens: int = Field(128, ge=8, description="Token limit for item texts.")
    sequence_max_tokens: int = Field(384, ge=8, description="Token limit in sequence mode.")
    encoder_backend: Literal["local", "remote"] = Field(
        "local",
        description="local: the model in model_path runs in this process; remote: an embedding "
        "service at encoder_url (text-embeddings-inference or OpenAI-compatible).",
    )
    encoder_url: str | None = Field(
        None, description="Base URL of the remote encoder service, e.g. http://tei:8080."
    )
    encoder_api: Literal["tei", "openai"] = Field(
        "tei", description="tei: POST /embed (+ GET /info); openai: POST /v1/embeddings."
    )
    encoder_model_name: str | None = Field(
        None,
        description="Model name sent in OpenAI requests; part of the remote model_version when "
        "the service does not report one (TEI's /info does).",
    )
    encoder_model_version: str | None = Field(
        None,
        description="Explicit model_version of the remote encoder (vector caches and item "
        "vectors key on it); default: derived from what the service reports.",
    )
    encoder_api_key: SecretStr | None = Field(
        None, description="Bearer token of the remote encoder service, if it wants one."
    )
    encoder_timeout_s: float = Field(10.0, gt=0, description="Timeout of one remote request.")
    encoder_retries: int = Field(
        3, ge=0, description="Retries of a remote request (connection errors, 5xx, 429)."
    )
    encoder_backoff_s: float = Field(
        0.25, ge=0, description="First retry delay; doubles on every retry (capped at 8 s)."
    )

    # --- interest -----------------------------------------------------------
    interest_mode: Literal["pooled", "sequence"] = "pooled"
    interest_half_life_s: float = Field(
        7 * DAY_S, gt=0, description="Recency half-life of window items in pooling."
    )
    interest_position_decay: float = Field(
        0.9, gt=0, le=1, description="Extra decay per position from the newest event."
    )
    facets: int = Field(3, ge=0, le=16, description="F: interest facets kept per user.")
    facet_threshold: float = Field(0.55, description="Cosine under which an item opens a facet.")

    # --- global clusters ----------------------------------------------------
    clustering: bool = True
    cluster_half_life_s: float = Field(3 * DAY_S, gt=0)
    cluster_k_max: int = Field(64, ge=1)
    cluster_new_threshold: float = Field(
        0.45, description="Cosine under which a point opens a cluster."
    )
    cluster_merge_threshold: float = Field(0.92, description="Cosine above which clusters merge.")
    interest_event_confirm: int = Field(
        2,
        ge=1,
        le=100,
        description="A user's move to another cluster is reported (interest-events) once the "
        "new cluster has held for this many consecutive assignments (hysteresis).",
    )
    cluster_retire_weight: float = Field(
        0.05, ge=0, description="Weight under which a cluster retires."
    )

    # --- collaborative counts -----------------------------------------------
    collab_half_life_s: float = Field(365 * DAY_S, gt=0)
    collab_weighting: Literal["uniform", "event"] = Field(
        "uniform", description="Count each consumption as 1 or by its event weight."
    )
    transition_window: int = Field(
        10, ge=1, description="W: recent items a transition counts from."
    )
    transition_distance_decay: float = Field(
        0.8, gt=0, le=1, description="A transition from r steps back counts this ** r."
    )
    transition_capacity: int = Field(
        200, ge=1, description="Successors kept per item (heavy hitters)."
    )
    cluster_transition_capacity: int = Field(50, ge=1)
    score_recent_items: int = Field(15, ge=1, description="m: recent items scored from.")
    transition_normalisation: float = Field(
        0.5, ge=0, le=1, description="Divide each source's transitions by its total ** this."
    )
    score_recency_decay: float = Field(0.8, gt=0, le=1, description="d: weight d^recency.")
    trending_half_life_s: float = Field(30 * DAY_S, gt=0)

    # --- ranking ------------------------------------------------------------
    # Defaults tuned on the first half of ml-latest-small (prequential, every 2nd
    # event) and the first 120,000 events of ml-1m-partial (every 5th): see
    # docs/evaluation.md. Domains with faster turnover (news) want shorter
    # collab/trending half-lives.
    emit_per: Literal["event", "user"] = Field(
        "event", description="One recommendation per processed event, or per user per batch."
    )
    top_k: int = Field(10, ge=1, le=1000)
    weight_content: float = 0.5
    weight_facets: float = 0.1
    weight_centroid: float = 0.05
    weight_transitions: float = 1.0
    weight_cluster_transitions: float = 0.2
    weight_cluster_popularity: float = 0.05
    weight_trending: float = 0.1

    # --- catalogue scale: two-stage ranking ---------------------------------
    ranking: Literal["auto", "exact", "two-stage"] = Field(
        "auto",
        description="exact: every user scored on the whole catalogue; two-stage: on a budget "
        "of candidates (transitions, nearest items from the vector index, cluster lists, "
        "trending) only; auto: exact up to exact_max_items recommendable items.",
    )
    exact_max_items: int = Field(
        2_000, ge=0, description="auto ranking switches to two-stage above this many items."
    )
    candidates: int = Field(
        320, ge=10, le=100_000, description="Candidates per user in two-stage ranking (budget)."
    )
    candidate_cache_users: int = Field(
        20_000,
        ge=0,
        description="Users whose index answers two-stage ranking keeps for reuse while their "
        "interest or facet has not moved (cosine ≥ 0.99); 0 searches every time.",
    )
    cluster_popular_capacity: int = Field(
        500, ge=1, description="Most consumed items kept per interest cluster."
    )
    index_precision: Literal["f32", "f16", "i8"] = Field(
        "i8",
        description="How the vector index stores item vectors: i8 searches about 3x faster "
        "than f16 on CPUs without native half precision, in a quarter of f32's memory.",
    )
    index_connectivity: int = Field(16, ge=4, le=128, description="HNSW edges per node (M).")
    index_expansion_add: int = Field(64, ge=8, description="HNSW search depth when adding.")
    index_expansion_search: int = Field(
        48, ge=8, description="HNSW search depth when querying (recall against speed)."
    )
    index_threads: int = Field(
        1, ge=0, description="Threads a batch search of the vector index uses (0: all cores)."
    )
    index_build_threads: int = Field(
        0,
        ge=0,
        description="Threads that build the vector index before a worker is ready (0: all cores).",
    )

    @field_validator("event_weights")
    @classmethod
    def _weights_positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not v > 0}
        if bad:
            raise ValueError(f"event weights must be > 0, got {bad}")
        return value
