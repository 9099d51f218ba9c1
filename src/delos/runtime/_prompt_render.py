"""Prompts and their templates: ``{{ name }}`` placeholders, parsed once, rendered in one pass.

:class:`Prompt` is one version of a stored prompt, checked when it is built; :func:`render` fills
its templates. The template language is deliberately tiny, so a template can never run code or
reach into objects:

- ``{{ name }}`` is replaced by the value of ``name``; spaces (and newlines) inside the braces
  are allowed. Names match ``[A-Za-z_][A-Za-z0-9_.-]*`` and are plain keys: ``{{ user.name }}``
  looks up the key ``"user.name"``; there are no attributes, filters or expressions.
- ``\\{{`` writes a literal ``{{`` (the backslash is dropped). A backslash anywhere else, and
  ``}}`` anywhere, are literal text.
- A ``{{`` that opens no valid placeholder is an error, found when the template is parsed, so a
  typo such as ``{{ name | upper }}`` fails at load time instead of reaching a model. One
  extra brace on each side is literal: ``{{{ x }}}`` renders ``{`` + x + ``}``, as JSON needs.
- Substitution is a single pass: a value containing ``{{ x }}`` is inserted as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from delos.runtime.errors import InvalidRequest
from delos.runtime.inputs import LIMITS
from delos.runtime.values import ROLES, ChatMessage

__all__ = [
    "PROMPT_NAME",
    "PROMPT_VERSION",
    "VARIABLE_NAME",
    "Placeholder",
    "Prompt",
    "Segment",
    "TemplateError",
    "parse_template",
    "placeholder_names",
    "render",
    "substitute",
]

#: A prompt's name: what may stand before the ':' of a ``prompt_ref``.
PROMPT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: A prompt's version: what may stand after the ':'.
PROMPT_VERSION: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
#: Which names a placeholder may hold; also the keys of a prompt's variable defaults.
VARIABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

_TOKEN: Final = re.compile(
    r"(?P<escape>\\\{\{)"
    r"|\{\{\s*(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}"
    # "{{{ x }}" is a literal "{" and a placeholder: a "{{" followed by exactly one more "{" is
    # left to the scan at the next character. A longer run of braces is an error.
    r"|(?P<bad>\{\{(?!\{(?!\{)))"
)


class TemplateError(ValueError):
    """A template is malformed; the message gives the character offset of the fault."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str


Segment = str | Placeholder


def parse_template(template: str) -> tuple[Segment, ...]:
    """Literal text and placeholders, in order. Raises :class:`TemplateError`."""
    segments: list[Segment] = []
    literal: list[str] = []
    position = 0
    for match in _TOKEN.finditer(template):
        literal.append(template[position : match.start()])
        position = match.end()
        if match.group("escape"):
            literal.append("{{")
        elif name := match.group("name"):
            segments.append("".join(literal))
            literal.clear()
            segments.append(Placeholder(name))
        else:
            excerpt = template[match.start() : match.start() + 30]
            raise TemplateError(
                f"offset {match.start()}: {excerpt!r} opens no valid placeholder; write "
                "{{ name }} with a name of letters, digits, '_', '.' or '-' (no expressions), "
                "or \\{{ for literal braces"
            )
    literal.append(template[position:])
    segments.append("".join(literal))
    return tuple(s for s in segments if s != "")


def placeholder_names(segments: Iterable[Segment]) -> frozenset[str]:
    """The variable names a parsed template refers to."""
    return frozenset(s.name for s in segments if isinstance(s, Placeholder))


def substitute(segments: Iterable[Segment], values: Mapping[str, str], *, max_chars: int) -> str:
    """Render parsed segments with ``values``, which must hold every name referred to.

    Raises ``KeyError`` on a missing name (callers check names first, to report them all) and
    :class:`TemplateError` when the result would exceed ``max_chars`` characters; the length is
    checked before the text is built, so a value repeated many times cannot exhaust memory.
    """
    parts = [s if isinstance(s, str) else values[s.name] for s in segments]
    length = sum(len(p) for p in parts)
    if length > max_chars:
        raise TemplateError(f"{length} characters once rendered, more than {max_chars}")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Prompt:
    """One version of a prompt. ``messages`` are (role, template) pairs; ``variables`` maps a
    placeholder name to its default value. ``temperature``, ``top_p``, ``max_tokens`` (tokens)
    and ``model`` are defaults for requests that leave them unset.

    Raises ``ValueError`` on a bad name, version, role, variable name or template.
    """

    name: str
    version: str
    messages: tuple[tuple[str, str], ...]
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    _templates: tuple[tuple[Segment, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not PROMPT_NAME.fullmatch(self.name):
            raise ValueError(f"name: {self.name[:80]!r} is not a valid prompt name")
        if not PROMPT_VERSION.fullmatch(self.version):
            raise ValueError(f"version: {self.version[:80]!r} is not a valid version")
        if not self.messages:
            raise ValueError("messages: at least one message is required")
        templates = []
        for index, (role, template) in enumerate(self.messages):
            if role not in ROLES:
                raise ValueError(
                    f"messages[{index}].role: {role!r} is not system, user or assistant"
                )
            try:
                templates.append(parse_template(template))
            except TemplateError as error:
                raise ValueError(f"messages[{index}].content: {error}") from None
        for variable in self.variables:
            if not VARIABLE_NAME.fullmatch(variable):
                raise ValueError(f"variables: {variable!r} is not a valid variable name")
        object.__setattr__(self, "_templates", tuple(templates))
        # A read-only copy: the prompt is shared by every request that names it.
        object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))

    @property
    def ref(self) -> str:
        """``name:version``, as a request would name this exact version."""
        return f"{self.name}:{self.version}"

    @property
    def variable_names(self) -> frozenset[str]:
        """Every placeholder name the messages refer to."""
        return frozenset().union(*(placeholder_names(t) for t in self._templates))


def render(prompt: Prompt, variables: Mapping[str, str]) -> tuple[ChatMessage, ...]:
    """The prompt's messages with ``variables`` (over the prompt's defaults) substituted.

    Unused variables are ignored. Raises :class:`InvalidRequest` naming every missing variable
    (sorted), or when a rendered message exceeds the per-message character limit.
    """
    values = {**prompt.variables, **variables}
    missing = sorted(prompt.variable_names - values.keys())
    if missing:
        raise InvalidRequest(
            f"variables: prompt {prompt.ref!r} needs a value for {', '.join(missing)}"
        )
    messages = []
    for index, ((role, _), template) in enumerate(
        zip(prompt.messages, prompt._templates, strict=True)
    ):
        try:
            content = substitute(template, values, max_chars=LIMITS.message_characters)
        except TemplateError as error:
            raise InvalidRequest(
                f"variables: message {index} of prompt {prompt.ref!r} would be {error}"
            ) from None
        messages.append(ChatMessage(role, content))
    return tuple(messages)
