"""The Dockerfile and docker-compose.yml ask only for what the CLI and the settings accept.

Neither can be built here (no network), so this reads them: every ``delos-runtime`` command line
they run must parse with the CLI's own parser, every gateway variable they set must be one the
settings read (and its value valid), and the health check they run must tell a serving gateway
from a dead one.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from delos.cli import _parser
from delos.runtime.config import ENVIRONMENT, PROVIDER_NAMES, ConfigError, Settings
from tests.observability.servers import write_self_signed

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"

#: Variables read per provider, outside ENVIRONMENT: ``DELOS_RUNTIME_<PROVIDER>_<SUFFIX>``.
PER_PROVIDER = re.compile(
    rf"DELOS_RUNTIME_({'|'.join(p.upper() for p in PROVIDER_NAMES)})_(RPM|TPM|MAX_CONNECTIONS)"
)
#: The gateway's own variables (and the cloud ones of its provider table); others pass through.
GATEWAY_VARIABLE = re.compile(r"(DELOS_|AWS_|GOOGLE_CLOUD_)\w+")
#: Compose interpolation: ``${NAME}``, ``${NAME:-default}`` or ``${NAME-default}``.
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


# -- reading the files ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        name, _, arguments = line.strip().partition(" ")
        instructions.append((name.upper(), arguments.strip()))
    return instructions


def dockerfile(name: str) -> list[str]:
    return [
        arguments for instruction, arguments in dockerfile_instructions() if instruction == name
    ]


def dockerfile_environment() -> dict[str, str]:
    environment: dict[str, str] = {}
    for arguments in dockerfile("ENV"):
        for pair in shlex.split(arguments):
            key, _, value = pair.partition("=")
            environment[key] = value
    return environment


def exec_form(arguments: str) -> list[str]:
    """A JSON-array instruction (ENTRYPOINT, CMD); the shell form is not used here."""
    parsed = yaml.safe_load(arguments)
    assert isinstance(parsed, list), f"expected the exec form, got {arguments!r}"
    return [str(part) for part in parsed]


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def gateway_services() -> dict[str, dict[str, Any]]:
    """The services running the gateway image (built from this directory)."""
    return {name: body for name, body in compose()["services"].items() if body.get("build")}


def resolved(environment: Mapping[str, str]) -> dict[str, str]:
    """Compose's interpolation with nothing exported: each ``${NAME:-default}`` is its default."""
    return {
        key: INTERPOLATION.sub(lambda match: match.group(2) or "", str(value))
        for key, value in environment.items()
    }


def accepted(variable: str) -> bool:
    return variable in ENVIRONMENT or PER_PROVIDER.fullmatch(variable) is not None


# -- the Dockerfile ---------------------------------------------------------------------------


def test_the_image_runs_the_gateway_as_a_user_without_privileges() -> None:
    (base,) = dockerfile("FROM")
    assert re.fullmatch(r"python:3\.11-slim(@sha256:[0-9a-f]{64})?", base)
    (user,) = dockerfile("USER")
    assert user.partition(":")[0] not in ("root", "0")
    assert any(re.search(r"pip install \"?\.(\[\w+\])?\"?", run) for run in dockerfile("RUN"))
    (entrypoint,) = dockerfile("ENTRYPOINT")
    assert exec_form(entrypoint) == ["delos-runtime"]  # pyproject's [project.scripts]


def test_the_image_command_parses_with_the_cli() -> None:
    (command,) = dockerfile("CMD")
    arguments = _parser().parse_args(exec_form(command))
    assert arguments.command == "serve"


def test_the_image_sets_only_variables_the_settings_read_with_valid_values() -> None:
    environment = dockerfile_environment()
    gateway = {k: v for k, v in environment.items() if GATEWAY_VARIABLE.fullmatch(k)}
    assert [k for k in gateway if not accepted(k)] == []
    settings = Settings.from_environ(gateway)
    assert settings.host == "0.0.0.0"  # reachable from outside the container
    exposed = {int(port) for line in dockerfile("EXPOSE") for port in line.split()}
    assert exposed == {settings.port, settings.metrics_port}


def test_the_health_check_is_the_script_the_image_copies() -> None:
    (healthcheck,) = dockerfile("HEALTHCHECK")
    _, _, command = healthcheck.partition("CMD ")
    argv = exec_form(command)
    (workdir,) = dockerfile("WORKDIR")
    copied = {}  # where each single-file COPY lands in the image → its source here
    for line in dockerfile("COPY"):
        source, destination = line.split()[-2:]
        copied[posixpath.normpath(posixpath.join(workdir, destination))] = source
    assert argv[0] == "python"
    assert copied.get(argv[-1]) == str(HEALTHCHECK.relative_to(ROOT))


# -- docker-compose.yml -----------------------------------------------------------------------


def test_compose_runs_three_gateway_replicas_with_redis_and_a_collector() -> None:
    services = compose()["services"]
    assert len(gateway_services()) == 3
    images = {name: str(body.get("image", "")) for name, body in services.items()}
    assert any(image.startswith("redis:7") for image in images.values())
    assert any(image.startswith("otel/opentelemetry-collector") for image in images.values())


@pytest.mark.parametrize("service", sorted(gateway_services()))
def test_each_replica_command_parses_with_the_cli(service: str) -> None:
    body = gateway_services()[service]
    command = body.get("command") or exec_form(dockerfile("CMD")[0])
    arguments = _parser().parse_args([str(part) for part in command])
    assert arguments.command == "serve"


@pytest.mark.parametrize("service", sorted(gateway_services()))
def test_each_replica_sets_only_variables_the_settings_read_with_valid_values(
    service: str,
) -> None:
    environment = resolved(gateway_services()[service]["environment"])
    assert [k for k in environment if not accepted(k)] == []
    # What the container sees: the image's variables, then compose's over them.
    settings = Settings.from_environ({**dockerfile_environment(), **environment})
    assert settings.redis_url is not None
    assert settings.observe_endpoint is not None


def test_the_replicas_reach_services_that_compose_defines() -> None:
    services = compose()["services"]
    for body in gateway_services().values():
        environment = resolved(body["environment"])
        for variable in ("DELOS_RUNTIME_REDIS_URL", "DELOS_RUNTIME_REDIS_CACHE_URL"):
            if variable in environment:
                assert urlsplit(environment[variable]).hostname in services, variable
        endpoint = urlsplit(environment["DELOS_OBSERVE_ENDPOINT"])
        assert endpoint.hostname in services
        assert endpoint.hostname in body["depends_on"]


def test_the_collector_receives_otlp_grpc_where_the_replicas_send_traces() -> None:
    (collector,) = (b for b in compose()["services"].values() if "collector" in str(b["image"]))
    mounts = [str(volume).split(":") for volume in collector["volumes"]]
    (config_path,) = [ROOT / source for source, _, *_ in mounts if source.endswith(".yaml")]
    config = yaml.safe_load(config_path.read_text())
    listen = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    (body, *_) = gateway_services().values()
    sends_to = urlsplit(resolved(body["environment"])["DELOS_OBSERVE_ENDPOINT"])
    assert int(listen.rpartition(":")[2]) == sends_to.port
    assert "otlp" in config["service"]["pipelines"]["traces"]["receivers"]


def test_an_unknown_variable_or_flag_would_be_caught() -> None:
    assert not accepted("DELOS_RUNTIME_REDIS_URI")
    assert not accepted("DELOS_RUNTIME_NOPE_RPM")
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--replicas", "3"])
    with pytest.raises(ConfigError):
        Settings.from_environ({"DELOS_RUNTIME_REDIS_URL": "http://redis:6379"})


# -- the health check -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_healthcheck(environment: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def clean_environment(**extra: str) -> dict[str, str]:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("DELOS_", "AWS_", "GOOGLE_"))
    }
    return {**environment, "DELOS_RUNTIME_METRICS_PORT": "0", **extra}


@pytest.fixture(params=["plaintext", "tls"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A serving ``delos-runtime serve --demo``; yields the variables the container would have.

    The gateway binds port 0 and the test reads the port it logs: a port picked in advance
    could be taken by another test before the gateway binds it."""
    environment = {"DELOS_RUNTIME_PORT": "0"}
    if request.param == "tls":
        pair = write_self_signed(tmp_path)
        environment |= {
            "DELOS_RUNTIME_TLS_CERT": str(pair.cert),
            "DELOS_RUNTIME_TLS_KEY": str(pair.key),
        }
    process = subprocess.Popen(
        [sys.executable, "-m", "delos.cli", "serve", "--demo", "--workers", "1"],
        env=clean_environment(**environment),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        logged = []
        for line in process.stderr:  # ends when the process does
            logged.append(line)
            found = re.search(r"listening on [^ ]+:(\d+)", line)
            if found:
                environment["DELOS_RUNTIME_PORT"] = found.group(1)
                break
        else:
            pytest.fail("the gateway exited before serving:\n" + "".join(logged))
        yield environment
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def test_the_health_check_passes_once_the_gateway_serves(gateway: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    result = run_healthcheck(gateway)
    while result.returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)  # the gateway is starting: Docker's start period, in small
        result = run_healthcheck(gateway)
    assert result.returncode == 0, result.stderr


def test_the_health_check_fails_when_nothing_serves() -> None:
    result = run_healthcheck({"DELOS_RUNTIME_PORT": str(free_port())})
    assert result.returncode == 1
    assert "unhealthy" in result.stderr
