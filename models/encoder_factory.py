"""The one place that turns settings into a text encoder: local model or remote service.

The engine, the worker topology and the evaluator all call :func:`make_encoder`,
so ``DRIFTREC_ENCODER_BACKEND=remote`` switches every one of them to the
service at ``DRIFTREC_ENCODER_URL``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.encoder import TextEncoder
    from models.remote_encoder import RemoteEncoder
    from models.settings import EngineSettings

__all__ = ["make_encoder"]


def make_encoder(settings: EngineSettings) -> TextEncoder | RemoteEncoder:
    """The encoder the settings ask for: a local :class:`TextEncoder` or a :class:`RemoteEncoder`.

    >>> from models.settings import EngineSettings
    >>> make_encoder(EngineSettings(encoder_backend="remote"))
    Traceback (most recent call last):
    ...
    ValueError: encoder_backend is 'remote' but no encoder_url is set; ...
    """
    if settings.encoder_backend == "remote":
        from models.remote_encoder import RemoteEncoder

        return RemoteEncoder.from_settings(settings)
    from models.encoder import TextEncoder

    return TextEncoder.from_settings(settings)
