"""Prompt templates: ``{{ name }}`` placeholders, parsed once, substituted in a single pass.

The language is deliberately tiny, so a template can never run code or reach into objects:

- ``{{ name }}`` is replaced by the value of ``name``; spaces (and newlines) inside the braces
  are allowed. Names match ``[A-Za-z_][A-Za-z0-9_.-]*`` and are plain keys: ``{{ user.name }}``
  looks up the key ``"user.name"``; there are no attributes, filters or expressions.
- ``\\{{`` writes a literal ``{{`` (the backslash is dropped). A backslash anywhere else, and
  ``}}`` anywhere, are literal text.
- A ``{{`` that opens no valid placeholder is an error, found when the template is parsed, so a
  typo such as ``{{ name | upper }}`` fails at load time instead of reaching a model. Extra
  single braces around a placeholder are literal: ``{{{ x }}}`` renders ``{`` + x + ``}``.
- Substitution is a single pass: a value containing ``{{ x }}`` is inserted as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "VARIABLE_NAME",
    "Placeholder",
    "Segment",
    "TemplateError",
    "parse_template",
    "placeholder_names",
    "substitute",
]

#: Which names a placeholder may hold; shared with the prompt files' variable defaults.
VARIABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

_TOKEN: Final = re.compile(
    r"(?P<escape>\\\{\{)"
    r"|\{\{\s*(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}"
    # A "{{" followed by another "{" is left to the scan at the next character, so that a
    # literal "{" may sit right before a placeholder.
    r"|(?P<bad>\{\{(?!\{))"
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
