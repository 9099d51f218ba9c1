"""Settings come from the environment once; bad values name the variable, never the secret."""

from __future__ import annotations

import pytest

from delos.runtime.config import DEFAULT_MAX_CONNECTIONS, ConfigError, Settings


def test_defaults_follow_the_product_spec() -> None:
    settings = Settings.from_environ({})
    assert settings.port == 9001
    assert settings.aws_region == "us-east-1"
    assert settings.google_cloud_location == "us-central1"
    assert settings.ollama_url == "http://localhost:11434"
    assert settings.log_level == "info" and settings.env == "development"
    assert not any(
        settings.is_configured(p)
        for p in (
            "openai",
            "anthropic",
            "gemini",
            "bedrock",
            "vertex",
            "together",
            "openrouter",
            "ollama",
        )
    )


def test_each_provider_is_enabled_by_its_credentials() -> None:
    settings = Settings.from_environ(
        {
            "DELOS_RUNTIME_OPENAI_KEY": "k1",
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "s",
            "GOOGLE_CLOUD_PROJECT": "p",
            "GOOGLE_CLOUD_ACCESS_TOKEN": "t",
            "DELOS_RUNTIME_OLLAMA_ENABLED": "true",
        }
    )
    assert [
        p
        for p in ("openai", "anthropic", "bedrock", "vertex", "ollama")
        if settings.is_configured(p)
    ] == ["openai", "bedrock", "vertex", "ollama"]


def test_base_url_overrides_are_read_and_normalised() -> None:
    settings = Settings.from_environ({"DELOS_RUNTIME_OPENAI_BASE_URL": "http://proxy:8080/v1/"})
    assert settings.openai_base_url == "http://proxy:8080/v1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DELOS_RUNTIME_PORT", "ninety"),
        ("DELOS_RUNTIME_PORT", "70000"),
        ("DELOS_LOG_LEVEL", "chatty"),
        ("DELOS_RUNTIME_OLLAMA_ENABLED", "perhaps"),
        ("DELOS_RUNTIME_OLLAMA_URL", "localhost:11434"),
        ("DELOS_RUNTIME_ANTHROPIC_BASE_URL", "ftp://example.com"),
        ("AWS_REGION", "mars"),
        ("DELOS_RUNTIME_OPENAI_RPM", "-5"),
        ("DELOS_RUNTIME_QUALITY_ORDER", "anthropic,acme"),
    ],
)
def test_an_invalid_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ({variable: value})
    assert variable in str(raised.value)


def test_a_secret_never_appears_in_a_configuration_error() -> None:
    secret = "sk-very-secret-value-123456"
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ({"DELOS_RUNTIME_OPENAI_KEY": secret, "DELOS_RUNTIME_PORT": "x"})
    assert secret not in str(raised.value)
    settings = Settings.from_environ({"DELOS_RUNTIME_OPENAI_KEY": secret})
    assert secret not in repr(settings) and secret not in str(settings)


def test_settings_are_frozen() -> None:
    settings = Settings.from_environ({})
    with pytest.raises(ValueError):
        settings.port = 1  # type: ignore[misc]


def test_connection_pools_are_set_per_provider_and_named_when_wrong() -> None:
    settings = Settings.from_environ(
        {"DELOS_RUNTIME_OPENAI_MAX_CONNECTIONS": "64", "DELOS_RUNTIME_CONNECTION_WAIT_SECONDS": "0"}
    )
    assert settings.connections_for("openai") == 64
    assert settings.connections_for("anthropic") == DEFAULT_MAX_CONNECTIONS
    assert settings.connection_wait_seconds == 0.0
    with pytest.raises(ConfigError, match="DELOS_RUNTIME_GEMINI_MAX_CONNECTIONS"):
        Settings.from_environ({"DELOS_RUNTIME_GEMINI_MAX_CONNECTIONS": "0"})


def test_the_stream_limit_per_connection_is_configurable() -> None:
    assert Settings.from_environ({}).max_concurrent_streams == 10_000
    settings = Settings.from_environ({"DELOS_RUNTIME_MAX_CONCURRENT_STREAMS": "300"})
    assert settings.max_concurrent_streams == 300
