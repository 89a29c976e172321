"""Online clustering of interest vectors: decaying centroids and River adapters.

``DecayingCentroids`` is driftrec's global interest clusterer (forward-decayed,
mergeable sums); ``RiverClusterer`` runs any River clusterer behind the same
:class:`~models.clustering.base.Clusterer` interface, for comparison.
"""

from models.clustering.base import NO_CLUSTER, Clusterer
from models.clustering.cluster_messages import (
    PROVISIONAL_ID_START,
    ClusterDelta,
    ClusterEvent,
    ClusterSnapshot,
)
from models.clustering.decaying_centroids import DecayingCentroids
from models.clustering.river_adapter import RiverClusterer

__all__ = [
    "NO_CLUSTER",
    "PROVISIONAL_ID_START",
    "ClusterDelta",
    "ClusterEvent",
    "ClusterSnapshot",
    "Clusterer",
    "DecayingCentroids",
    "RiverClusterer",
]
