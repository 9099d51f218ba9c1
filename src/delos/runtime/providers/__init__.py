"""Provider adapters and the registry that enables those whose credentials are configured.

Layout:
    base.py               the Provider protocol and the shared HTTP adapter base
    _http.py              httpx errors, upstream statuses and rate-limit headers → ours
    _client.py            one pooled httpx client per provider
    openai_compatible.py  OpenAI, Together AI, OpenRouter (one adapter, three dialects)
    registry.py           which providers are enabled, built from the settings
"""

from delos.runtime.providers.base import HttpProvider, Provider
from delos.runtime.providers.registry import build_providers

__all__ = ["HttpProvider", "Provider", "build_providers"]
