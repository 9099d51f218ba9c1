"""The one table of provider facts: one row per provider, in the product spec's order.

Everything that tells one provider from another outside its adapter lives in its row: the
environment variables it reads (and the settings field each fills), which of those enable it, the
adapter's builder, whether it has embeddings, whether its request paths must go out exactly as
built, its rank in the default quality order and its demo-mode profile. The rest of the code asks
this table (through :mod:`delos.runtime.config`, which re-exports it with the helpers derived from
it) instead of listing providers itself.

This module is a leaf: it imports nothing of the project. The adapters import the settings, and
the settings import this table, so the builder column names its function (``"module:function"``)
and :mod:`delos.runtime.providers.registry` imports it when it builds the providers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "DEFAULT_QUALITY_ORDER",
    "EMBEDDING_PROVIDERS",
    "PROVIDERS",
    "PROVIDER_NAMES",
    "DemoProfile",
    "ProviderFacts",
]


@dataclass(frozen=True, slots=True)
class DemoProfile:
    """How a provider's fake behaves in demo mode."""

    #: Median time to first token, seconds.
    ttft_seconds: float
    #: Streamed tokens per second.
    tokens_per_second: float


@dataclass(frozen=True, slots=True)
class ProviderFacts:
    """One provider's row."""

    name: str
    #: Every environment variable the provider reads → the settings field it fills.
    variables: Mapping[str, str]
    #: The settings fields that enable the provider: all must be set (a flag: true).
    enabled_by: tuple[str, ...]
    #: ``"module:function"`` building the adapter from (settings, catalog, HTTP client).
    builder: str
    #: Whether the provider has an embeddings API.
    embeddings: bool
    #: Rank in the default quality order, 1 first.
    quality_rank: int
    demo: DemoProfile
    #: Whether the provider takes images by https URL; the others need the bytes, which the
    #: gateway fetches only when DELOS_RUNTIME_FETCH_IMAGE_URLS allows it.
    image_urls: bool = False


_ROWS: Final = (
    ProviderFacts(
        name="openai",
        variables={
            "DELOS_RUNTIME_OPENAI_KEY": "openai_key",
            "DELOS_RUNTIME_OPENAI_BASE_URL": "openai_base_url",
        },
        enabled_by=("openai_key",),
        builder="delos.runtime.providers.openai_compatible:build_openai",
        embeddings=True,
        image_urls=True,
        quality_rank=2,
        demo=DemoProfile(0.25, 80.0),
    ),
    ProviderFacts(
        name="anthropic",
        variables={
            "DELOS_RUNTIME_ANTHROPIC_KEY": "anthropic_key",
            "DELOS_RUNTIME_ANTHROPIC_BASE_URL": "anthropic_base_url",
        },
        enabled_by=("anthropic_key",),
        builder="delos.runtime.providers.anthropic:build_anthropic",
        embeddings=False,
        image_urls=True,
        quality_rank=1,
        demo=DemoProfile(0.40, 60.0),
    ),
    ProviderFacts(
        name="gemini",
        variables={
            "DELOS_RUNTIME_GEMINI_KEY": "gemini_key",
            "DELOS_RUNTIME_GEMINI_BASE_URL": "gemini_base_url",
        },
        enabled_by=("gemini_key",),
        builder="delos.runtime.providers.gemini:build_gemini",
        embeddings=True,
        quality_rank=5,
        demo=DemoProfile(0.30, 120.0),
    ),
    ProviderFacts(
        name="bedrock",
        variables={
            "AWS_ACCESS_KEY_ID": "aws_access_key_id",
            "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
            "AWS_REGION": "aws_region",
            "AWS_SESSION_TOKEN": "aws_session_token",
            "DELOS_RUNTIME_BEDROCK_BASE_URL": "bedrock_base_url",
        },
        enabled_by=("aws_access_key_id", "aws_secret_access_key"),
        builder="delos.runtime.providers.bedrock:build_bedrock",
        embeddings=True,
        quality_rank=4,
        demo=DemoProfile(0.45, 55.0),
    ),
    ProviderFacts(
        name="vertex",
        variables={
            "GOOGLE_CLOUD_PROJECT": "google_cloud_project",
            "GOOGLE_CLOUD_LOCATION": "google_cloud_location",
            "GOOGLE_CLOUD_ACCESS_TOKEN": "google_cloud_access_token",
            "DELOS_RUNTIME_VERTEX_BASE_URL": "vertex_base_url",
        },
        enabled_by=("google_cloud_project", "google_cloud_access_token"),
        builder="delos.runtime.providers.vertex:build_vertex",
        embeddings=True,
        quality_rank=3,
        demo=DemoProfile(0.35, 90.0),
    ),
    ProviderFacts(
        name="together",
        variables={
            "DELOS_RUNTIME_TOGETHER_KEY": "together_key",
            "DELOS_RUNTIME_TOGETHER_BASE_URL": "together_base_url",
        },
        enabled_by=("together_key",),
        builder="delos.runtime.providers.openai_compatible:build_together",
        embeddings=True,
        image_urls=True,
        quality_rank=7,
        demo=DemoProfile(0.18, 120.0),
    ),
    ProviderFacts(
        name="openrouter",
        variables={
            "DELOS_RUNTIME_OPENROUTER_KEY": "openrouter_key",
            "DELOS_RUNTIME_OPENROUTER_BASE_URL": "openrouter_base_url",
            "DELOS_RUNTIME_OPENROUTER_SITE_URL": "openrouter_site_url",
            "DELOS_RUNTIME_OPENROUTER_SITE_NAME": "openrouter_site_name",
        },
        enabled_by=("openrouter_key",),
        builder="delos.runtime.providers.openai_compatible:build_openrouter",
        embeddings=False,
        image_urls=True,
        quality_rank=6,
        demo=DemoProfile(0.35, 70.0),
    ),
    ProviderFacts(
        name="ollama",
        variables={
            "DELOS_RUNTIME_OLLAMA_ENABLED": "ollama_enabled",
            "DELOS_RUNTIME_OLLAMA_URL": "ollama_url",
        },
        enabled_by=("ollama_enabled",),
        builder="delos.runtime.providers.ollama:build_ollama",
        embeddings=True,
        quality_rank=8,
        demo=DemoProfile(0.08, 40.0),
    ),
)

#: Provider name → its row, in the spec's order.
PROVIDERS: Final[Mapping[str, ProviderFacts]] = MappingProxyType({r.name: r for r in _ROWS})
#: Every provider's name, in the spec's order.
PROVIDER_NAMES: Final = tuple(PROVIDERS)
#: Providers with an embeddings API, in the order tried when a request names none.
EMBEDDING_PROVIDERS: Final = tuple(r.name for r in _ROWS if r.embeddings)
#: The quality order used when ``DELOS_RUNTIME_QUALITY_ORDER`` is not set, best first.
DEFAULT_QUALITY_ORDER: Final = tuple(
    r.name for r in sorted(_ROWS, key=lambda row: row.quality_rank)
)
