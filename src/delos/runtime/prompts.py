"""Stored prompts: versioned message templates that a request names with ``prompt_ref``.

``PromptStore`` is what the service needs (a Prompt service can implement it);
``DirectoryPromptStore`` reads prompt files from a directory. ``resolve_prompt`` turns a request
that names a prompt into a plain request. ``Prompt``, ``render`` and the template language
live in ``_prompt_render``.

A directory holds one folder per prompt and one file per version; JSON works as YAML does::

    prompts/
        summarizer/
            v2.yaml
            v2.1.yaml
        translator.json          # a file at the top level names itself: "name" and "version"

    # prompts/summarizer/v2.1.yaml
    description: Summaries for the support team.        # optional
    model: claude-3-5-haiku                             # optional defaults for the request
    temperature: 0.2
    max_tokens: 400
    top_p: 0.9
    variables:                                          # optional defaults for placeholders
      tone: neutral
    messages:
      - role: system
        content: "Summarise the {{ kind }} below in a {{ tone }} tone."
      - role: user
        content: "{{ text }}"

Inside a prompt's folder, ``name`` and ``version`` may be omitted (they come from the folder and
the file name); when present they must agree. ``latest`` is the highest version under a
natural order: digit runs compare as numbers (``v2.10`` > ``v2.9`` > ``v2``), and a version
with a ``-`` followed by a letter is a pre-release of the part before it (``v3-rc1`` < ``v3``).
Files with other extensions and hidden files are ignored. In YAML, quote a numeric version
(``version: "2.10"``): unquoted it would be read as the number 2.1, so it is rejected.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import anyio.lowlevel
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from delos.runtime._prompt_render import PROMPT_NAME, PROMPT_VERSION, Prompt, render
from delos.runtime.errors import InvalidRequest, PromptNotFound
from delos.runtime.inputs import LIMITS, CompletionInput, normalized_conversation

__all__ = [
    "DirectoryPromptStore",
    "Prompt",
    "PromptFileError",
    "PromptStore",
    "parse_prompt_ref",
    "render",
    "resolve_prompt",
    "version_order",
]

_FILE_SUFFIXES: Final = frozenset({".yaml", ".yml", ".json"})


class PromptStore(Protocol):
    """Where prompts come from."""

    async def get(self, name: str, version: str | None) -> Prompt:
        """The prompt ``name`` at ``version`` (None: the latest). Raises :class:`PromptNotFound`."""
        ...

    async def versions(self, name: str) -> list[str]:
        """The versions of ``name``, oldest first; empty for an unknown name."""
        ...


def parse_prompt_ref(ref: str) -> tuple[str, str | None]:
    """``"name"`` or ``"name:version"`` → (name, version or None).

    Raises :class:`InvalidRequest` when either part is empty or holds other characters.
    """
    text = ref.strip()
    name, colon, version = text.partition(":")
    if not PROMPT_NAME.fullmatch(name):
        raise InvalidRequest(
            f"prompt_ref: {text[:80]!r} does not start with a prompt name "
            "(letters, digits, '_', '.', '-'); use name or name:version"
        )
    if not colon:
        return name, None
    if not PROMPT_VERSION.fullmatch(version):
        raise InvalidRequest(
            f"prompt_ref: {text[:80]!r} has no valid version after ':' "
            "(letters, digits, '_', '.', '+', '-'); use name or name:version"
        )
    return name, version


async def resolve_prompt(store: PromptStore, request: CompletionInput) -> CompletionInput:
    """The request with its prompt applied; unchanged when it names no prompt.

    The rendered prompt messages come first, then the request's own messages. ``model``,
    ``temperature``, ``top_p`` and ``max_tokens`` take the prompt's defaults only where the
    request left them unset. ``prompt_ref`` becomes the exact ``name:version`` used, which
    records what "latest" meant; apply this once per request.

    Raises :class:`InvalidRequest` (bad reference, missing variables, a result without a user or
    assistant message, or too long) and :class:`PromptNotFound`.
    """
    if request.prompt_ref is None:
        return request
    name, version = parse_prompt_ref(request.prompt_ref)
    prompt = await store.get(name, version)
    messages = render(prompt, request.variables) + request.messages
    try:
        messages = normalized_conversation(messages)
    except InvalidRequest as problem:
        raise InvalidRequest(f"{problem.message} (prompt {prompt.ref!r} and the request)") from None
    if len(messages) > LIMITS.messages:
        raise InvalidRequest(f"messages: at most {LIMITS.messages} messages with the prompt")
    if sum(len(m.content) for m in messages) > LIMITS.total_characters:
        raise InvalidRequest(
            f"messages: longer than {LIMITS.total_characters} characters with the prompt"
        )
    return replace(
        request,
        messages=messages,
        model=request.model if request.model is not None else prompt.model,
        temperature=request.temperature if request.temperature is not None else prompt.temperature,
        top_p=request.top_p if request.top_p is not None else prompt.top_p,
        max_tokens=request.max_tokens if request.max_tokens is not None else prompt.max_tokens,
        prompt_ref=prompt.ref,
    )


# -- version order --------------------------------------------------------------------------------

_RUN: Final = re.compile(r"(\d+)|(\D+)")
_PRE_RELEASE: Final = re.compile(r"(.*?)-([A-Za-z].*)")


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    # Numbers sort before text so that every pair of runs is comparable.
    return tuple((0, int(digits)) if digits else (1, other) for digits, other in _RUN.findall(text))


def version_order(version: str) -> tuple[Any, ...]:
    """Sort key of a version: natural order, pre-releases (``-rc1``) before their release."""
    pre_release = _PRE_RELEASE.fullmatch(version)
    if pre_release:
        release, suffix = pre_release.groups()
        return (_natural(release), 0, _natural(suffix), version)
    return (_natural(version), 1, (), version)


# -- the directory store --------------------------------------------------------------------------


class PromptFileError(Exception):
    """A prompt file or directory cannot be read or is malformed; the message names the file,
    e.g. ``prompts/summarizer/v2.yaml: messages[0].role: ...``."""


class _MessageFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: StrictStr


class _PromptFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StrictStr | None = None
    version: StrictStr | None = None
    description: StrictStr = ""
    model: StrictStr | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=LIMITS.max_tokens)
    variables: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    messages: list[_MessageFile] = Field(min_length=1)


class DirectoryPromptStore:
    """Prompts read from a directory (layout in the module docstring), loaded once.

    Loading blocks on file reads: construct the store at start-up, and run :meth:`reload` in a
    worker thread (``anyio.to_thread.run_sync(store.reload)``) once the event loop is serving.
    Raises :class:`PromptFileError` naming the first file at fault.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._prompts: dict[str, dict[str, Prompt]] = {}
        self._versions: dict[str, tuple[str, ...]] = {}
        self.reload()

    def reload(self) -> None:
        """Read the directory again. On error the prompts loaded before are kept."""
        found: dict[tuple[str, str], tuple[Prompt, Path]] = {}
        for path, folder in self._prompt_files():
            prompt = _load(path, folder)
            earlier = found.get((prompt.name, prompt.version))
            if earlier is not None:
                raise PromptFileError(f"{path}: {prompt.ref} is already defined by {earlier[1]}")
            found[prompt.name, prompt.version] = (prompt, path)
        prompts: dict[str, dict[str, Prompt]] = {}
        for (name, version), (prompt, _) in found.items():
            prompts.setdefault(name, {})[version] = prompt
        self._versions = {
            name: tuple(sorted(by_version, key=version_order))
            for name, by_version in prompts.items()
        }
        self._prompts = prompts

    async def get(self, name: str, version: str | None) -> Prompt:
        await anyio.lowlevel.checkpoint()
        by_version = self._prompts.get(name)
        if by_version is None:
            close = difflib.get_close_matches(name, self._prompts, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise PromptNotFound(f"prompt {name[:80]!r} not found{hint}")
        if version is None:
            version = self._versions[name][-1]
        prompt = by_version.get(version)
        if prompt is None:
            raise PromptNotFound(
                f"prompt {name!r} has no version {version[:80]!r}; "
                f"versions: {', '.join(self._versions[name])}"
            )
        return prompt

    async def versions(self, name: str) -> list[str]:
        await anyio.lowlevel.checkpoint()
        return list(self._versions.get(name, ()))

    def _prompt_files(self) -> list[tuple[Path, str | None]]:
        """(file, the prompt folder it sits in or None at the top level), in a stable order."""
        if not self._path.is_dir():
            raise PromptFileError(f"{self._path}: not a directory")
        files: list[tuple[Path, str | None]] = []
        for entry in sorted(self._path.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                for inner in sorted(entry.iterdir()):
                    if inner.name.startswith("."):
                        continue
                    if inner.is_dir():
                        raise PromptFileError(
                            f"{inner}: folders inside a prompt's folder are not supported"
                        )
                    if inner.suffix in _FILE_SUFFIXES:
                        files.append((inner, entry.name))
            elif entry.suffix in _FILE_SUFFIXES:
                files.append((entry, None))
        return files


def _load(path: Path, folder: str | None) -> Prompt:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PromptFileError(f"{path}: cannot be read ({error})") from None
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise PromptFileError(f"{path}: not valid {path.suffix[1:].upper()} ({error})") from None
    try:
        data = _PromptFile.model_validate(document)
    except ValidationError as error:
        raise PromptFileError(f"{path}: {_describe(error)}") from None
    name, version = data.name, data.version
    if folder is None:
        if name is None or version is None:
            raise PromptFileError(
                f"{path}: a file at the top level needs 'name' and 'version' fields "
                "(or put it in a folder named after the prompt, as <version>" + path.suffix + ")"
            )
    else:
        for field_name, given, expected in (
            ("name", name, folder),
            ("version", version, path.stem),
        ):
            if given is not None and given != expected:
                raise PromptFileError(
                    f"{path}: {field_name}: {given!r} disagrees with the file's place "
                    f"({expected!r}); remove the field or move the file"
                )
        name, version = folder, path.stem
    try:
        return Prompt(
            name=name,
            version=version,
            messages=tuple((m.role, m.content) for m in data.messages),
            model=data.model,
            temperature=data.temperature,
            max_tokens=data.max_tokens,
            top_p=data.top_p,
            variables=data.variables,
            description=data.description,
        )
    except ValueError as error:
        raise PromptFileError(f"{path}: {error}") from None


def _describe(error: ValidationError) -> str:
    """Pydantic's first error, located the way the file is written (``messages[0].role``)."""
    first = error.errors()[0]
    location = ""
    for part in first["loc"]:
        location += f"[{part}]" if isinstance(part, int) else f".{part}"
    location = location.lstrip(".") or "document"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{location}: {first['msg']}{more}"
