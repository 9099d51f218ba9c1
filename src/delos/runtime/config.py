"""Settings: read once from the environment at start-up, validated, frozen, passed down.

Every variable is named in one table (``ENVIRONMENT``): the general ones here, each provider's in
its row of the provider table (:mod:`delos.runtime._provider_facts`), which this module
re-exports with what is derived from it: :data:`PROVIDER_NAMES`, :data:`EMBEDDING_PROVIDERS`,
:func:`enabling_variables` and :data:`NO_PROVIDERS_CONFIGURED`. An invalid value stops start-up
with a :class:`ConfigError` that names the variable and never repeats a secret's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)

from delos.runtime._provider_facts import (
    DEFAULT_QUALITY_ORDER,
    EMBEDDING_PROVIDERS,
    PROVIDER_NAMES,
    PROVIDERS,
    DemoProfile,
    ProviderFacts,
)

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "EMBEDDING_PROVIDERS",
    "ENVIRONMENT",
    "NO_PROVIDERS_CONFIGURED",
    "PROVIDERS",
    "PROVIDER_NAMES",
    "ConfigError",
    "DemoProfile",
    "ProviderFacts",
    "ProviderLimits",
    "Settings",
    "enabling_variables",
    "secret_value",
]


class ConfigError(Exception):
    """A configuration value is invalid; the message names the variable at fault."""


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


HttpUrl = Annotated[str | None, AfterValidator(_http_url)]


def _redis_url(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not value.get_secret_value().startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value


#: A Redis URL: a secret, since it may carry a password.
RedisUrl = Annotated[SecretStr | None, AfterValidator(_redis_url)]


#: Concurrent requests one worker holds towards a provider unless
#: ``DELOS_RUNTIME_<PROVIDER>_MAX_CONNECTIONS`` says otherwise: each is one upstream connection,
#: and long streams hold theirs for minutes.
DEFAULT_MAX_CONNECTIONS: Final = 1024


class ProviderLimits(BaseModel):
    """Requests and tokens per minute allowed towards one provider (None: no local limit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)


class Settings(BaseModel):
    """The gateway's whole configuration. Build it with :meth:`from_environ`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    env: str = "development"
    observe_endpoint: str | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=9001, ge=0, le=65535)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    #: Upper bound on one request when the client sets no gRPC deadline, seconds.
    default_deadline_seconds: float = Field(default=120.0, gt=0)

    openai_key: SecretStr | None = None
    anthropic_key: SecretStr | None = None
    gemini_key: SecretStr | None = None
    together_key: SecretStr | None = None
    openrouter_key: SecretStr | None = None

    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    aws_session_token: SecretStr | None = None

    google_cloud_project: str | None = None
    google_cloud_location: str = Field(default="us-central1", pattern=r"^[a-z0-9-]+$")
    google_cloud_access_token: SecretStr | None = None

    ollama_enabled: bool = False
    ollama_url: HttpUrl = "http://localhost:11434"

    openrouter_site_url: str | None = None
    openrouter_site_name: str | None = None

    openai_base_url: HttpUrl = None
    anthropic_base_url: HttpUrl = None
    gemini_base_url: HttpUrl = None
    bedrock_base_url: HttpUrl = None
    vertex_base_url: HttpUrl = None
    together_base_url: HttpUrl = None
    openrouter_base_url: HttpUrl = None

    catalog_path: str | None = None
    limits: Mapping[str, ProviderLimits] = Field(default_factory=dict)
    #: Provider → concurrent requests one worker may hold towards it (its connection pool).
    max_connections: Mapping[str, Annotated[int, Field(ge=1, le=1_000_000)]] = Field(
        default_factory=dict
    )
    #: Longest a request waits for a free connection before trying another candidate, seconds.
    connection_wait_seconds: float = Field(default=1.0, ge=0)
    #: Fetch images given by URL for providers that need the bytes (public https URLs only).
    fetch_image_urls: bool = False
    race_width: int = Field(default=2, ge=1, le=8)
    hedging: bool = False
    quality_order: tuple[str, ...] = DEFAULT_QUALITY_ORDER
    #: HTTP client towards providers: ``auto`` (the gateway's own HTTP/1.1 client on asyncio,
    #: httpx on trio and for signed paths) or ``httpx`` everywhere (slower; docs/benchmarks.md).
    http_transport: Literal["auto", "httpx"] = "auto"
    #: HTTP connect timeout towards providers, seconds.
    connect_timeout_seconds: float = Field(default=5.0, gt=0)

    #: Largest request message accepted, bytes (gRPC's RESOURCE_EXHAUSTED beyond it).
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=1 << 31)
    #: Calls one client connection may run at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    max_concurrent_streams: int = Field(default=10_000, ge=1, le=2**31 - 1)
    cache_max_entries: int = Field(default=10_000, ge=1)
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    cache_default_ttl_seconds: int = Field(default=3600, ge=1)
    prompts_dir: str | None = None

    #: Redis holding what replicas share: rate limits, breaker openings, the live replicas and
    #: the response cache's level 2. Unset: every piece of state stays in the process.
    redis_url: RedisUrl = None
    #: A Redis of its own for the response cache's level 2 (``maxmemory`` + ``allkeys-lru``),
    #: so eviction never touches the limits on ``redis_url`` (``noeviction``).
    redis_cache_url: RedisUrl = None
    #: Longest one call to Redis may take before this replica uses local state, seconds.
    redis_deadline_seconds: float = Field(default=0.05, gt=0, le=5)

    #: Prometheus endpoint port; 0 turns the endpoint off.
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    #: Client keys, ``name:key`` pairs separated by commas.
    api_keys: SecretStr | None = None
    #: A file of client keys: one ``name:sha256-hex-of-key`` per line, ``#`` comments.
    api_keys_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate the environment. Raises :class:`ConfigError`."""
        data: dict[str, Any] = {}
        for variable, field_name in ENVIRONMENT.items():
            value = environ.get(variable)
            if value is None or value == "":
                continue
            if field_name == "quality_order":
                data[field_name] = tuple(p.strip() for p in value.split(",") if p.strip())
            elif field_name == "log_level":
                data[field_name] = value.lower()
            else:
                data[field_name] = value
        limits: dict[str, dict[str, str]] = {}
        for provider in PROVIDER_NAMES:
            for suffix, key in (("RPM", "requests_per_minute"), ("TPM", "tokens_per_minute")):
                value = environ.get(f"DELOS_RUNTIME_{provider.upper()}_{suffix}")
                if value:
                    limits.setdefault(provider, {})[key] = value
        if limits:
            data["limits"] = limits
        connections = {
            provider: value
            for provider in PROVIDER_NAMES
            if (value := environ.get(f"DELOS_RUNTIME_{provider.upper()}_MAX_CONNECTIONS"))
        }
        if connections:
            data["max_connections"] = connections
        try:
            settings = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise ConfigError(
                "DELOS_RUNTIME_TLS_CERT and DELOS_RUNTIME_TLS_KEY: set both, or neither"
            )
        if settings.redis_cache_url is not None and settings.redis_url is None:
            raise ConfigError(
                "DELOS_RUNTIME_REDIS_CACHE_URL: set DELOS_RUNTIME_REDIS_URL as well (the limits "
                "and breakers it shares), or neither"
            )
        unknown = [p for p in settings.quality_order if p not in PROVIDER_NAMES]
        if unknown:
            raise ConfigError(
                f"DELOS_RUNTIME_QUALITY_ORDER: unknown provider {unknown[0]!r}; "
                f"known: {', '.join(PROVIDER_NAMES)}"
            )
        return settings

    # -- providers ------------------------------------------------------------------------------

    def connections_for(self, provider: str) -> int:
        """Concurrent requests (HTTP connections) this worker may hold towards ``provider``."""
        return self.max_connections.get(provider, DEFAULT_MAX_CONNECTIONS)

    def is_configured(self, provider: str) -> bool:
        """True when every setting that enables ``provider`` is set (False for an unknown name)."""
        facts = PROVIDERS.get(provider)
        if facts is None:
            return False
        return all(_is_set(getattr(self, field)) for field in facts.enabled_by)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for the redactor; empty values excluded."""
        values = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        return tuple(values)


def _is_set(value: object) -> bool:
    return value is not None and value is not False


def secret_value(secret: SecretStr | None) -> str:
    """The value of an optional secret setting; empty when it is not set."""
    return secret.get_secret_value() if secret is not None else ""


def _describe_enabling(facts: ProviderFacts) -> str:
    variable_of = {field: variable for variable, field in facts.variables.items()}
    return " and ".join(
        f"{variable_of[field]}=true"
        if Settings.model_fields[field].annotation is bool
        else variable_of[field]
        for field in facts.enabled_by
    )


_ENABLING: Final = {name: _describe_enabling(facts) for name, facts in PROVIDERS.items()}


def enabling_variables(provider: str) -> str:
    """How to enable ``provider``, for messages: ``"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"``.

    Raises KeyError for an unknown provider.
    """
    return _ENABLING[provider]


#: What to say when no provider is configured at all.
NO_PROVIDERS_CONFIGURED: Final = (
    f"no providers configured: set a provider key such as {enabling_variables(PROVIDER_NAMES[0])}, "
    "or start the gateway with --demo"
)

#: Environment variable → settings field: the general variables, then every provider's.
ENVIRONMENT: Final[Mapping[str, str]] = {
    "DELOS_LOG_LEVEL": "log_level",
    "DELOS_ENV": "env",
    "DELOS_OBSERVE_ENDPOINT": "observe_endpoint",
    "DELOS_RUNTIME_HOST": "host",
    "DELOS_RUNTIME_PORT": "port",
    "DELOS_RUNTIME_SHUTDOWN_GRACE_SECONDS": "shutdown_grace_seconds",
    "DELOS_RUNTIME_DEFAULT_DEADLINE_SECONDS": "default_deadline_seconds",
    "DELOS_RUNTIME_CATALOG": "catalog_path",
    "DELOS_RUNTIME_RACE_WIDTH": "race_width",
    "DELOS_RUNTIME_HEDGING": "hedging",
    "DELOS_RUNTIME_QUALITY_ORDER": "quality_order",
    "DELOS_RUNTIME_CONNECT_TIMEOUT_SECONDS": "connect_timeout_seconds",
    "DELOS_RUNTIME_HTTP_TRANSPORT": "http_transport",
    "DELOS_RUNTIME_MAX_MESSAGE_BYTES": "max_message_bytes",
    "DELOS_RUNTIME_MAX_CONCURRENT_STREAMS": "max_concurrent_streams",
    "DELOS_RUNTIME_CONNECTION_WAIT_SECONDS": "connection_wait_seconds",
    "DELOS_RUNTIME_FETCH_IMAGE_URLS": "fetch_image_urls",
    "DELOS_RUNTIME_CACHE_MAX_ENTRIES": "cache_max_entries",
    "DELOS_RUNTIME_CACHE_MAX_BYTES": "cache_max_bytes",
    "DELOS_RUNTIME_CACHE_TTL_SECONDS": "cache_default_ttl_seconds",
    "DELOS_RUNTIME_PROMPTS_DIR": "prompts_dir",
    "DELOS_RUNTIME_REDIS_URL": "redis_url",
    "DELOS_RUNTIME_REDIS_CACHE_URL": "redis_cache_url",
    "DELOS_RUNTIME_REDIS_DEADLINE_SECONDS": "redis_deadline_seconds",
    "DELOS_RUNTIME_METRICS_PORT": "metrics_port",
    "DELOS_RUNTIME_API_KEYS": "api_keys",
    "DELOS_RUNTIME_API_KEYS_FILE": "api_keys_file",
    "DELOS_RUNTIME_TLS_CERT": "tls_cert",
    "DELOS_RUNTIME_TLS_KEY": "tls_key",
    **{
        variable: field
        for facts in PROVIDERS.values()
        for variable, field in facts.variables.items()
    },
}

_VARIABLE_OF_FIELD: Final = {field: variable for variable, field in ENVIRONMENT.items()}


def _describe(exc: ValidationError) -> str:
    """Name the variable and the rule broken, never the value (it may be a secret)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        location = [str(part) for part in error["loc"]]
        if location and location[0] == "limits" and len(location) >= 3:
            suffix = "RPM" if location[2] == "requests_per_minute" else "TPM"
            variable = f"DELOS_RUNTIME_{location[1].upper()}_{suffix}"
        elif location and location[0] == "max_connections" and len(location) >= 2:
            variable = f"DELOS_RUNTIME_{location[1].upper()}_MAX_CONNECTIONS"
        else:
            variable = _VARIABLE_OF_FIELD.get(location[0], ".".join(location)) if location else "?"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{variable}: {message}")
    return "invalid configuration: " + "; ".join(problems)
