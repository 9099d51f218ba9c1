"""Prompts: safe rendering, the directory store, references, and merging into a request."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from delos.runtime.errors import InvalidRequest, PromptNotFound
from delos.runtime.inputs import CompletionInput, Routing
from delos.runtime.prompts import (
    DirectoryPromptStore,
    Prompt,
    PromptFileError,
    PromptStore,
    parse_prompt_ref,
    render,
    resolve_prompt,
    version_order,
)
from delos.runtime.values import ChatMessage


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def prompt(*templates: str, variables: Mapping[str, str] | None = None, **fields: Any) -> Prompt:
    return Prompt(
        name=fields.pop("name", "greeter"),
        version=fields.pop("version", "v1"),
        messages=tuple(("user", t) for t in templates),
        variables=variables or {},
        **fields,
    )


def rendered(template: str, values: Mapping[str, str], **fields: Any) -> str:
    (message,) = render(prompt(template, **fields), values)
    return message.content


# -- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["{{name}}", "{{ name }}", "{{   name\t}}", "{{\nname\n}}"])
def test_spaces_inside_the_braces_do_not_matter(template: str) -> None:
    assert rendered(f"Hi {template}!", {"name": "Ada"}) == "Hi Ada!"


def test_a_variable_used_twice_is_substituted_twice() -> None:
    assert rendered("{{ x }} and {{x}}", {"x": "1"}) == "1 and 1"


def test_a_default_fills_a_variable_the_request_leaves_out_and_a_value_overrides_it() -> None:
    fields = {"variables": {"tone": "neutral"}}
    assert rendered("{{ tone }}", {}, **fields) == "neutral"
    assert rendered("{{ tone }}", {"tone": "dry"}, **fields) == "dry"


def test_every_missing_variable_is_named_in_sorted_order() -> None:
    template = prompt("{{ zeta }} {{ alpha }}", "{{ mid }} {{ known }}")
    with pytest.raises(InvalidRequest) as caught:
        render(template, {"known": "k"})
    assert "greeter:v1" in caught.value.message
    assert caught.value.message.endswith("needs a value for alpha, mid, zeta")


def test_unused_variables_are_fine() -> None:
    assert rendered("plain", {"unused": "x"}) == "plain"


def test_a_value_holding_braces_is_inserted_as_it_is_not_rendered_again() -> None:
    assert rendered("{{ a }}", {"a": "{{ b }}", "b": "no"}) == "{{ b }}"


def test_names_are_plain_keys_dots_and_dashes_included() -> None:
    assert rendered("{{ user.name }}/{{ x-y }}", {"user.name": "ada", "x-y": "1"}) == "ada/1"


def test_unicode_in_templates_names_and_values_survives() -> None:
    assert rendered("Grüße, {{ name }} 👋\u2028", {"name": "Zoë 李"}) == "Grüße, Zoë 李 👋\u2028"


def test_backslash_braces_write_literal_braces() -> None:
    assert rendered(r"\{{ name }} is {{ name }}", {"name": "Ada"}) == "{{ name }} is Ada"
    assert rendered(r"a \ b }} c", {}) == r"a \ b }} c"


def test_single_braces_around_a_placeholder_stay_literal() -> None:
    assert rendered('{"city": "{{ city }}"} {{{ x }}}', {"city": "Paris", "x": "1"}) == (
        '{"city": "Paris"} {1}'
    )


@pytest.mark.parametrize(
    "template",
    [
        "{{ name | upper }}",
        "{{ user['name'] }}",
        "{{ __import__('os').system('true') }}",
        "{{ a + b }}",
        "{{ 1name }}",
        "{{ }}",
        "unclosed {{ name",
        "{{{{ x }}",
        "{{{{",
    ],
)
def test_anything_but_a_plain_name_in_braces_is_rejected_when_the_prompt_is_built(
    template: str,
) -> None:
    with pytest.raises(ValueError, match=r"messages\[0\]\.content: offset \d+"):
        prompt(template)


def test_a_rendered_message_beyond_the_size_limit_is_refused_before_it_is_built() -> None:
    big = prompt("{{ x }}" * 2000)
    with pytest.raises(InvalidRequest, match="characters once rendered"):
        render(big, {"x": "y" * 10_000})


def test_a_prompt_refuses_unknown_roles_and_bad_names() -> None:
    with pytest.raises(ValueError, match="role"):
        Prompt(name="p", version="v1", messages=(("robot", "hi"),))
    with pytest.raises(ValueError, match="name"):
        prompt("hi", name="no spaces")
    with pytest.raises(ValueError, match="version"):
        prompt("hi", version="v1:2")
    with pytest.raises(ValueError, match="variables"):
        prompt("hi", variables={"a b": "x"})
    with pytest.raises(ValueError, match="at least one message"):
        Prompt(name="p", version="v1", messages=())


def test_the_prompt_lists_the_variables_its_messages_use() -> None:
    assert prompt("{{ a }} {{ b }}", "{{ a }}").variable_names == {"a", "b"}


# -- references and versions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("summarizer", ("summarizer", None)),
        ("summarizer:v2.1", ("summarizer", "v2.1")),
        ("  summarizer:v2  ", ("summarizer", "v2")),
        ("team.summarizer-x:1.0.0+build-7", ("team.summarizer-x", "1.0.0+build-7")),
    ],
)
def test_a_reference_is_a_name_with_an_optional_version(
    ref: str, expected: tuple[str, str | None]
) -> None:
    assert parse_prompt_ref(ref) == expected


@pytest.mark.parametrize("ref", ["", "   ", ":v1", "name:", "a:b:c", "na me", "name:v 1", "-x"])
def test_a_malformed_reference_is_an_invalid_request(ref: str) -> None:
    with pytest.raises(InvalidRequest, match="prompt_ref"):
        parse_prompt_ref(ref)


def test_versions_sort_naturally_with_pre_releases_before_their_release() -> None:
    versions = ["v2.10", "v1", "v2", "v2.9", "v3-rc1", "v3", "v3-rc10", "v3-rc2", "v2.9.1"]
    assert sorted(versions, key=version_order) == [
        "v1",
        "v2",
        "v2.9",
        "v2.9.1",
        "v2.10",
        "v3-rc1",
        "v3-rc2",
        "v3-rc10",
        "v3",
    ]


def test_date_versions_sort_by_date() -> None:
    dates = ["2024-11-02", "2024-05-30", "2025-01-01"]
    assert sorted(dates, key=version_order) == ["2024-05-30", "2024-11-02", "2025-01-01"]


# -- the directory store ------------------------------------------------------------------------

SUMMARIZER_V2 = """\
description: Summaries.
model: claude-3-5-haiku
temperature: 0.2
max_tokens: 400
variables:
  tone: neutral
messages:
  - role: system
    content: "Summarise in a {{ tone }} tone."
  - role: user
    content: "{{ text }}"
"""


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def simple(content: str = "hi", **fields: Any) -> str:
    return json.dumps({**fields, "messages": [{"role": "user", "content": content}]})


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    write(tmp_path, "summarizer/v2.yaml", SUMMARIZER_V2)
    write(tmp_path, "summarizer/v2.9.yml", simple("nine"))
    write(tmp_path, "summarizer/v2.10.json", simple("ten"))
    write(tmp_path, "summarizer/README.md", "not a prompt")
    write(tmp_path, "translator.json", simple("translate", name="translator", version="1.0"))
    write(tmp_path, ".hidden/v1.yaml", "this: [is not read")
    return tmp_path


@pytest.mark.anyio
async def test_a_name_alone_gives_the_latest_version(prompts_dir: Path) -> None:
    store = DirectoryPromptStore(prompts_dir)
    latest = await store.get("summarizer", None)
    assert latest.version == "v2.10"
    assert latest.messages == (("user", "ten"),)
    assert await store.versions("summarizer") == ["v2", "v2.9", "v2.10"]


@pytest.mark.anyio
async def test_a_name_and_version_gives_that_version_with_its_defaults(prompts_dir: Path) -> None:
    store: PromptStore = DirectoryPromptStore(prompts_dir)
    v2 = await store.get("summarizer", "v2")
    assert v2 == Prompt(
        name="summarizer",
        version="v2",
        messages=(("system", "Summarise in a {{ tone }} tone."), ("user", "{{ text }}")),
        model="claude-3-5-haiku",
        temperature=0.2,
        max_tokens=400,
        variables={"tone": "neutral"},
        description="Summaries.",
    )


@pytest.mark.anyio
async def test_a_top_level_file_names_itself(prompts_dir: Path) -> None:
    store = DirectoryPromptStore(prompts_dir)
    assert (await store.get("translator", None)).ref == "translator:1.0"


@pytest.mark.anyio
async def test_an_unknown_version_lists_the_versions_that_exist(prompts_dir: Path) -> None:
    store = DirectoryPromptStore(prompts_dir)
    with pytest.raises(PromptNotFound) as caught:
        await store.get("summarizer", "v3")
    assert caught.value.message == (
        "prompt 'summarizer' has no version 'v3'; versions: v2, v2.9, v2.10"
    )


@pytest.mark.anyio
async def test_an_unknown_name_suggests_close_matches(prompts_dir: Path) -> None:
    store = DirectoryPromptStore(prompts_dir)
    with pytest.raises(PromptNotFound, match=r"did you mean summarizer\?"):
        await store.get("sumarizer", None)
    with pytest.raises(PromptNotFound) as caught:
        await store.get("zzz", "v1")
    assert caught.value.message == "prompt 'zzz' not found"
    assert await store.versions("zzz") == []


@pytest.mark.anyio
async def test_reload_sees_new_files_and_keeps_the_old_prompts_on_error(tmp_path: Path) -> None:
    write(tmp_path, "p/v1.json", simple("one"))
    store = DirectoryPromptStore(tmp_path)
    write(tmp_path, "p/v2.json", simple("two"))
    assert (await store.get("p", None)).version == "v1"  # loaded once, not on every get
    store.reload()
    assert (await store.get("p", None)).version == "v2"
    write(tmp_path, "p/v3.json", "{broken")
    with pytest.raises(PromptFileError):
        store.reload()
    assert await store.versions("p") == ["v1", "v2"]


@pytest.mark.parametrize(
    ("relative", "text", "expected"),
    [
        ("p/v1.yaml", "messages: [unclosed", r"p/v1\.yaml: not valid YAML"),
        ("p/v1.json", '{"messages": ', r"p/v1\.json: not valid JSON"),
        ("p/v1.yaml", "- a list\n", r"p/v1\.yaml: document: "),
        ("p/v1.yaml", "", r"p/v1\.yaml: document: "),
        ("p/v1.json", simple(extra=1), r"p/v1\.json: extra: Extra inputs are not permitted"),
        (
            "p/v1.json",
            '{"messages": [{"role": "robot", "content": "x"}]}',
            r"p/v1\.json: messages\[0\]\.role: ",
        ),
        ("p/v1.json", '{"messages": []}', r"p/v1\.json: messages: "),
        ("p/v1.json", simple(temperature=3), r"p/v1\.json: temperature: "),
        ("p/v1.yaml", "version: 2.10\nmessages: [{role: user, content: x}]", r"version: "),
        ("p/v1.json", simple(variables={"n": 1}), r"p/v1\.json: variables\.n: "),
        ("p/v1.json", simple("{{ a | b }}"), r"p/v1\.json: messages\[0\]\.content: offset 0"),
        ("p/v1.json", simple(name="q"), r"p/v1\.json: name: 'q' disagrees"),
        ("p/v1.json", simple(version="v2"), r"p/v1\.json: version: 'v2' disagrees"),
        ("loose.json", simple(), r"loose\.json: a file at the top level needs 'name'"),
        ("bad name/v1.json", simple(), r"bad name/v1\.json: name: 'bad name'"),
        ("p/old/v1.json", simple(), r"p/old: folders inside a prompt's folder"),
    ],
)
def test_a_malformed_file_stops_loading_with_an_error_naming_it(
    tmp_path: Path, relative: str, text: str, expected: str
) -> None:
    write(tmp_path, relative, text)
    with pytest.raises(PromptFileError, match=expected):
        DirectoryPromptStore(tmp_path)


def test_two_files_defining_the_same_version_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "p/v1.json", simple())
    write(tmp_path, "p/v1.yaml", "messages: [{role: user, content: hi}]")
    with pytest.raises(PromptFileError, match=r"p:v1 is already defined by .*p/v1\.json"):
        DirectoryPromptStore(tmp_path)


def test_a_missing_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="nowhere: not a directory"):
        DirectoryPromptStore(tmp_path / "nowhere")


# -- resolving a request ------------------------------------------------------------------------


class MemoryStore:
    """A PromptStore holding prompts in memory, as a Prompt service client would."""

    def __init__(self, *prompts: Prompt) -> None:
        self.prompts = {p.ref: p for p in prompts}

    async def get(self, name: str, version: str | None) -> Prompt:
        if version is None:
            version = (await self.versions(name))[-1]
        try:
            return self.prompts[f"{name}:{version}"]
        except KeyError:
            raise PromptNotFound(f"prompt {name!r} has no version {version!r}") from None

    async def versions(self, name: str) -> list[str]:
        found = [p.version for p in self.prompts.values() if p.name == name]
        return sorted(found, key=version_order)


SUMMARIZER = Prompt(
    name="summarizer",
    version="v2",
    messages=(("system", "Be {{ tone }}."), ("user", "Summarise: {{ text }}")),
    model="claude-3-5-haiku",
    temperature=0.2,
    max_tokens=400,
    top_p=0.9,
    variables={"tone": "brief"},
)


def request(**fields: Any) -> CompletionInput:
    return CompletionInput(
        **{"messages": (), "routing": Routing.COST, "prompt_ref": "summarizer", **fields}
    )


@pytest.mark.anyio
async def test_prompt_messages_come_first_then_the_requests_own() -> None:
    follow_up = ChatMessage("user", "Now in French.")
    resolved = await resolve_prompt(
        MemoryStore(SUMMARIZER), request(messages=(follow_up,), variables={"text": "Long text."})
    )
    assert resolved.messages == (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Summarise: Long text."),
        follow_up,
    )
    assert resolved.prompt_ref == "summarizer:v2"


@pytest.mark.anyio
async def test_prompt_defaults_fill_only_what_the_request_left_unset() -> None:
    store = MemoryStore(SUMMARIZER)
    defaults = await resolve_prompt(store, request(variables={"text": "t"}))
    assert (defaults.model, defaults.temperature, defaults.max_tokens, defaults.top_p) == (
        "claude-3-5-haiku",
        0.2,
        400,
        0.9,
    )
    own = request(variables={"text": "t"}, model="gpt-4o", temperature=0.0, max_tokens=5, top_p=1.0)
    resolved = await resolve_prompt(store, own)
    assert (resolved.model, resolved.temperature, resolved.max_tokens, resolved.top_p) == (
        "gpt-4o",
        0.0,
        5,
        1.0,
    )


@pytest.mark.anyio
async def test_everything_else_in_the_request_is_kept() -> None:
    original = request(
        variables={"text": "t"},
        stop=("END",),
        metadata={"team": "support"},
        use_cache=True,
        cache_ttl_seconds=30,
        provider="anthropic",
        routing=Routing.SPECIFIC,
    )
    resolved = await resolve_prompt(MemoryStore(SUMMARIZER), original)
    keep = (
        "stop",
        "metadata",
        "use_cache",
        "cache_ttl_seconds",
        "provider",
        "routing",
        "variables",
    )
    for name in keep:
        assert getattr(resolved, name) == getattr(original, name)


@pytest.mark.anyio
async def test_a_request_without_a_prompt_is_returned_unchanged() -> None:
    plain = request(prompt_ref=None, messages=(ChatMessage("user", "hi"),))
    assert await resolve_prompt(MemoryStore(), plain) is plain


@pytest.mark.anyio
async def test_resolving_reports_missing_variables_and_unknown_prompts() -> None:
    store = MemoryStore(SUMMARIZER)
    with pytest.raises(InvalidRequest, match="needs a value for text"):
        await resolve_prompt(store, request())
    with pytest.raises(PromptNotFound):
        await resolve_prompt(store, request(prompt_ref="summarizer:v9"))
    with pytest.raises(InvalidRequest, match="prompt_ref"):
        await resolve_prompt(store, request(prompt_ref="summarizer:"))


@pytest.mark.anyio
async def test_a_system_only_result_is_an_invalid_request() -> None:
    system_only = dataclasses.replace(SUMMARIZER, messages=(("system", "Be brief."),))
    with pytest.raises(InvalidRequest, match="at least one user message is required"):
        await resolve_prompt(MemoryStore(system_only), request())
