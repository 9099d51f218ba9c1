from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import pytest

from delos.runtime.observability import configure_logging, log_request
from delos.runtime.redaction import Redactor
from delos.runtime.routing import AttemptKind, AttemptOutcome

pytestmark = pytest.mark.usefixtures("restore_logging")

SECRET = "sentinel-secret-value-42"
redact = Redactor([SECRET])


class Attempt(NamedTuple):
    provider: str
    model: str
    kind: AttemptKind
    outcome: AttemptOutcome
    cost_usd: float


def configured(env: str, level: str = "info") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, env, redact, stream)
    return stream


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_production_lines_are_json_with_ts_level_logger_message_and_extras() -> None:
    stream = configured("production")
    logging.getLogger("delos.test").warning("%d providers up", 3, extra={"region": "eu"})
    [line] = lines(stream)
    record = json.loads(line)
    assert record["level"] == "WARNING"
    assert record["logger"] == "delos.test"
    assert record["message"] == "3 providers up"
    assert record["region"] == "eu"
    assert record["ts"].endswith("Z") and "T" in record["ts"]
    assert set(record) == {"ts", "level", "logger", "message", "region"}


def test_development_lines_are_readable_with_extras_as_key_value_pairs() -> None:
    stream = configured("development")
    logging.getLogger("delos.test").info("ready", extra={"port": 9001, "note": "two words"})
    [line] = lines(stream)
    assert " INFO    delos.test: ready " in line
    assert line.endswith('port=9001 note="two words"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_the_level_from_settings_filters_records() -> None:
    stream = configured("production", level="warning")
    logging.getLogger("delos.test").info("hidden")
    logging.getLogger("delos.test").error("shown")
    assert [json.loads(line)["message"] for line in lines(stream)] == ["shown"]


def test_http_client_info_lines_are_quiet_but_their_warnings_are_not() -> None:
    stream = configured("production", level="debug")
    logging.getLogger("httpx").info("HTTP Request: POST https://example.invalid/?key=abc")
    logging.getLogger("httpcore.http11").debug("send_request_headers.started")
    logging.getLogger("httpx").warning("connection pool is full")
    assert [json.loads(line)["message"] for line in lines(stream)] == ["connection pool is full"]


def test_configuring_twice_replaces_the_handler_instead_of_adding_one() -> None:
    first = configured("production")
    second = configured("production")
    logging.getLogger("delos.test").warning("once")
    assert lines(first) == []
    assert len(lines(second)) == 1


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("chatty", "production", redact, io.StringIO())


@pytest.mark.parametrize("env", ["production", "development"])
def test_a_secret_is_masked_in_message_args_extras_and_exception_text(env: str) -> None:
    stream = configured(env)
    log = logging.getLogger("delos.test")
    log.warning(f"message with {SECRET}")
    log.warning("argument %s", SECRET)
    log.warning("extras", extra={"header": f"Bearer {SECRET}", "nested": {"k": [SECRET]}})
    log.warning("key-shaped", extra={"upstream": "sk-ant-0123456789abcdefXYZ"})
    try:
        raise RuntimeError(f"upstream said {SECRET}")
    except RuntimeError:
        log.exception("failed")
    text = stream.getvalue()
    assert SECRET not in text
    assert "sk-ant-0123456789" not in text
    assert text.count("[REDACTED]") == 6


def test_a_secret_that_json_would_escape_is_still_masked() -> None:
    secret = 'quote"and\\slash'
    stream = io.StringIO()
    configure_logging("info", "production", Redactor([secret]), stream)
    logging.getLogger("delos.test").warning("value %s", secret, extra={"field": secret})
    record = json.loads(stream.getvalue())
    assert record["message"] == "value [REDACTED]"
    assert record["field"] == "[REDACTED]"


def _log_one_request(logger: logging.Logger, **overrides: Any) -> None:
    fields: dict[str, Any] = {
        "request_id": "a1b2c3",
        "rpc": "Complete",
        "provider": "openai",
        "model": "gpt-4o",
        "status": "OK",
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cost_usd": 0.0031,
        "latency_ms": 212.5,
        "ttft_ms": 40.0,
        "cached": False,
        "client": "team-a",
        "metadata": {"feature": "summaries"},
        "attempts": [
            Attempt("openai", "gpt-4o", AttemptKind.PRIMARY, AttemptOutcome.WON, 0.003),
            Attempt(
                "anthropic", "claude-sonnet", AttemptKind.RACE, AttemptOutcome.CANCELLED, 0.0001
            ),
        ],
    }
    fields.update(overrides)
    log_request(logger, **fields)


def test_a_request_is_one_info_line_with_every_field_structured() -> None:
    stream = configured("production")
    _log_one_request(logging.getLogger("delos.runtime.grpc.service"))
    [line] = lines(stream)
    record = json.loads(line)
    assert record["level"] == "INFO"
    assert record["message"] == "Complete OK"
    assert {k: record[k] for k in ("request_id", "provider", "model", "client", "cached")} == {
        "request_id": "a1b2c3",
        "provider": "openai",
        "model": "gpt-4o",
        "client": "team-a",
        "cached": False,
    }
    assert (record["prompt_tokens"], record["completion_tokens"]) == (100, 20)
    assert (record["latency_ms"], record["ttft_ms"], record["cost_usd"]) == (212.5, 40.0, 0.0031)
    assert record["metadata"] == {"feature": "summaries"}
    assert record["attempts"] == [
        {"provider": "openai", "model": "gpt-4o", "kind": "primary", "outcome": "won",
         "cost_usd": 0.003},
        {"provider": "anthropic", "model": "claude-sonnet", "kind": "race",
         "outcome": "cancelled", "cost_usd": 0.0001},
    ]  # fmt: skip


def test_request_metadata_and_attempt_errors_are_redacted_too() -> None:
    from delos.runtime.routing import AttemptRecord

    stream = configured("production")
    failed = AttemptRecord(
        "openai", "gpt-4o", AttemptKind.PRIMARY, AttemptOutcome.FAILED, error=f"401 for {SECRET}"
    )
    _log_one_request(
        logging.getLogger("delos.runtime.grpc.service"),
        metadata={"note": SECRET},
        attempts=[failed],
        status="UNAVAILABLE",
    )
    record = json.loads(stream.getvalue())
    assert record["metadata"] == {"note": "[REDACTED]"}
    assert record["attempts"][0]["error"] == "401 for [REDACTED]"


class _Untouchable(Mapping[str, str]):
    """Metadata and attempts that fail the test if anything reads them."""

    def __getitem__(self, key: str) -> str:
        raise AssertionError("read while INFO is disabled")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("read while INFO is disabled")

    def __len__(self) -> int:
        raise AssertionError("read while INFO is disabled")


def test_no_work_is_done_when_info_is_disabled() -> None:
    stream = configured("production", level="warning")
    _log_one_request(
        logging.getLogger("delos.runtime.grpc.service"),
        metadata=_Untouchable(),
        attempts=_Untouchable(),
    )
    assert stream.getvalue() == ""
