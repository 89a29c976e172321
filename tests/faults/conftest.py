"""The fault suite talks to the same real broker as the integration tests (their fixture)."""

from tests.integration.conftest import kafka_bootstrap

__all__ = ["kafka_bootstrap"]
