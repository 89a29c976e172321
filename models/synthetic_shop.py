"""A synthetic shop whose customers' interests drift at known times.

The demo needs ground truth that real logs do not have. Items belong to
topics (``trail running``, ``espresso``, …) and carry text made of the
topic's words, so the encoder sees real language. Within a topic, items
follow a typical path (tent → sleeping bag → stove …): after buying an item a
customer often moves on to the next one, which is what transition counts
learn. Each customer follows one or two topics; at a known time per customer
(around ``drift_at`` of the stream) one of those topics is swapped for a new
one. A few topics *fade* (everyone following them moves on) and a few
*emerge* (nobody follows them before the drift, and most movers go there), so
interest clusters should be born and fade as well as shift. Event types
follow a funnel: views are common, purchases rare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.contracts import BehaviourEvent, CatalogItem

__all__ = ["TOPICS", "SyntheticShop", "synthetic_shop"]

#: topic → (nouns, adjectives); texts are built from these.
TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "trail running": (
        [
            "trail running shoes",
            "hydration vest",
            "running socks",
            "GPS sports watch",
            "headlamp for night runs",
            "energy gels",
            "running jacket",
            "trekking poles",
        ],
        ["lightweight", "waterproof", "grippy", "cushioned", "breathable"],
    ),
    "espresso": (
        [
            "espresso machine",
            "burr coffee grinder",
            "milk frothing jug",
            "tamper",
            "single-origin coffee beans",
            "descaling tablets",
            "espresso cups",
            "knock box",
        ],
        ["barista-grade", "stainless", "dark roast", "compact", "italian"],
    ),
    "fantasy books": (
        [
            "epic fantasy novel",
            "dragon saga paperback",
            "wizard school hardcover",
            "sword and sorcery anthology",
            "elven kingdom trilogy",
            "fantasy map poster",
            "illustrated bestiary",
            "audiobook of a quest",
        ],
        ["bestselling", "signed", "collector's", "annotated", "first-edition"],
    ),
    "camping": (
        [
            "two-person tent",
            "down sleeping bag",
            "camping stove",
            "inflatable sleeping pad",
            "water filter",
            "camp cookware set",
            "folding camp chair",
            "lantern",
        ],
        ["ultralight", "four-season", "packable", "rugged", "family-size"],
    ),
    "baby care": (
        [
            "newborn diapers",
            "baby wipes",
            "baby bottle set",
            "baby monitor",
            "stroller",
            "baby carrier",
            "teething toy",
            "nursery night light",
        ],
        ["hypoallergenic", "gentle", "organic", "soft", "BPA-free"],
    ),
    "pc gaming": (
        [
            "graphics card",
            "mechanical keyboard",
            "gaming mouse",
            "144Hz monitor",
            "gaming headset",
            "RGB PC case",
            "NVMe SSD",
            "gaming chair",
        ],
        ["overclocked", "RGB", "low-latency", "wireless", "pro"],
    ),
    "yoga": (
        [
            "yoga mat",
            "yoga blocks",
            "meditation cushion",
            "yoga strap",
            "leggings for yoga",
            "foam roller",
            "yoga wheel",
            "mat cleaning spray",
        ],
        ["non-slip", "eco-friendly", "thick", "travel", "cork"],
    ),
    "baking": (
        [
            "stand mixer",
            "sourdough starter kit",
            "bread proofing basket",
            "silicone baking mat",
            "cake pans",
            "digital kitchen scale",
            "piping bags",
            "cooling rack",
        ],
        ["professional", "non-stick", "artisan", "heavy-duty", "french"],
    ),
    "photography": (
        [
            "mirrorless camera",
            "prime lens",
            "camera tripod",
            "SD memory card",
            "camera bag",
            "ND filter",
            "external flash",
            "lens cleaning kit",
        ],
        ["full-frame", "fast", "weather-sealed", "carbon", "vintage"],
    ),
    "gardening": (
        [
            "pruning shears",
            "raised garden bed",
            "tomato seeds",
            "garden hose",
            "compost bin",
            "gardening gloves",
            "watering can",
            "potting soil",
        ],
        ["organic", "heirloom", "ergonomic", "self-watering", "perennial"],
    ),
    "cycling": (
        [
            "road bike",
            "bike helmet",
            "cycling shoes",
            "bike lights",
            "chain lubricant",
            "bike repair kit",
            "cycling jersey",
            "indoor bike trainer",
        ],
        ["aero", "carbon", "clipless", "reflective", "gravel"],
    ),
    "skincare": (
        [
            "moisturising cream",
            "vitamin C serum",
            "sunscreen SPF 50",
            "cleansing foam",
            "retinol night cream",
            "hydrating face mask",
            "eye cream",
            "toner",
        ],
        ["fragrance-free", "dermatologist-tested", "vegan", "brightening", "soothing"],
    ),
}

_FUNNEL = (("view", 0.55), ("click", 0.25), ("cart", 0.12), ("purchase", 0.08))


@dataclass
class SyntheticShop:
    """A generated catalogue and event stream with ground truth.

    Attributes
    ----------
    items
        The catalogue records.
    events
        Behaviour events in event-time order.
    item_topic
        Topic of each item id.
    event_topic
        Topic of each event's item (ground truth per event).
    drift_ts
        For each user who drifts: ``(time, old topic, new topic)``.
    """

    items: list[CatalogItem]
    events: list[BehaviourEvent]
    item_topic: dict[str, str]
    event_topic: list[str]
    drift_ts: dict[str, tuple[float, str, str]]


def synthetic_shop(
    *,
    n_users: int = 300,
    items_per_topic: int = 24,
    events_per_user: int = 60,
    n_topics: int = 12,
    drift_at: float = 0.5,
    drift_share: float = 0.6,
    n_fading: int = 2,
    n_emerging: int = 2,
    start_ts: float = 1_700_000_000.0,
    span_s: float = 20 * 86_400.0,
    seed: int = 0,
    event_weights: dict[str, float] | None = None,
) -> SyntheticShop:
    """Generate a shop.

    Examples
    --------
    >>> shop = synthetic_shop(n_users=5, items_per_topic=4, events_per_user=10, n_topics=3,
    ...                       n_fading=1, n_emerging=1)
    >>> len(shop.items), len(shop.events)
    (12, 50)
    >>> all(a.ts <= b.ts for a, b in zip(shop.events, shop.events[1:]))
    True
    """
    rng = np.random.default_rng(seed)
    weights = event_weights or {"view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0}
    topics = list(TOPICS)[:n_topics]
    if n_fading + n_emerging >= n_topics:
        raise ValueError(f"need more than {n_fading + n_emerging} topics, got {n_topics}")
    fading = set(range(n_fading))
    emerging = list(range(n_topics - n_emerging, n_topics))
    steady = list(range(n_topics - n_emerging))
    items: list[CatalogItem] = []
    item_topic: dict[str, str] = {}
    by_topic: dict[str, list[str]] = {}
    for t_idx, topic in enumerate(topics):
        nouns, adjectives = TOPICS[topic]
        ids = []
        for j in range(items_per_topic):
            item_id = f"p{t_idx:02d}{j:03d}"
            noun = nouns[j % len(nouns)]
            adjective = adjectives[(j // len(nouns) + j) % len(adjectives)]
            title = f"{adjective.capitalize()} {noun}"
            items.append(
                CatalogItem(
                    item_id=item_id,
                    title=title,
                    text=f"A {adjective} {noun} for {topic} enthusiasts.",
                    tags=[topic],
                    ts=start_ts,
                )
            )
            item_topic[item_id] = topic
            ids.append(item_id)
        by_topic[topic] = ids
    # Zipf-like popularity inside each topic.
    popularity = 1.0 / np.arange(1, items_per_topic + 1) ** 0.8
    popularity /= popularity.sum()

    raw: list[tuple[float, int, BehaviourEvent, str]] = []
    drift_ts: dict[str, tuple[float, str, str]] = {}
    funnel_names = [name for name, _ in _FUNNEL]
    funnel_p = np.array([p for _, p in _FUNNEL])
    for u in range(n_users):
        user_id = f"user{u:04d}"
        n_interests = 1 + int(rng.random() < 0.4)
        interests = [int(t) for t in rng.choice(steady, size=n_interests, replace=False)]
        interests.sort(key=lambda t: t not in fading)  # a fading interest is the one replaced
        drifts = rng.random() < drift_share or interests[0] in fading
        drift_time = start_ts + span_s * float(np.clip(rng.normal(drift_at, 0.05), 0.2, 0.8))
        times = np.sort(start_ts + rng.random(events_per_user) * span_s)
        position = {t: int(rng.integers(items_per_topic)) for t in range(len(topics))}
        drifted = False
        for ts in times:
            if drifts and not drifted and ts >= drift_time:
                old = interests[0]
                fresh = [t for t in emerging if t not in interests]
                others = [t for t in steady if t not in interests and t not in fading]
                if others and (not fresh or rng.random() < 0.3):
                    fresh = others
                new = int(rng.choice(fresh or [t for t in range(n_topics) if t not in interests]))
                interests[0] = new
                drift_ts[user_id] = (drift_time, topics[old], topics[new])
                drifted = True
            topic_idx = int(interests[int(rng.integers(len(interests)))])
            topic = topics[topic_idx]
            if rng.random() < 0.6:  # follow the topic's typical path
                position[topic_idx] = (position[topic_idx] + 1) % items_per_topic
            else:
                position[topic_idx] = int(rng.choice(items_per_topic, p=popularity))
            item_id = by_topic[topic][position[topic_idx]]
            kind = str(rng.choice(funnel_names, p=funnel_p))
            event = BehaviourEvent(
                user_id=user_id,
                item_id=item_id,
                event=kind,
                ts=round(float(ts), 3),
                event_id=f"{user_id}-{len(raw)}",
                weight=weights[kind],
            )
            raw.append((event.ts, len(raw), event, topic))
    raw.sort(key=lambda r: (r[0], r[1]))
    return SyntheticShop(
        items=items,
        events=[r[2] for r in raw],
        item_topic=item_topic,
        event_topic=[r[3] for r in raw],
        drift_ts=drift_ts,
    )
