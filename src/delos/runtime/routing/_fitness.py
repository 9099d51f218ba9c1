"""Whether a candidate can honour a request as asked, and why not.

A candidate that cannot is skipped (the reason goes into the answer's attempts), never sent a
clamped or dropped setting: a request means the same whichever candidate the router picks. When
no candidate can, the request is refused with INVALID_ARGUMENT naming the setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from delos.runtime.catalog import CAPABILITIES, Catalog, ModelInfo
from delos.runtime.errors import InvalidRequest
from delos.runtime.inputs import CompletionInput
from delos.runtime.values import DocumentPart, ImagePart

__all__ = ["Unable", "models_with", "none_able", "required_capabilities", "unable"]


@dataclass(frozen=True, slots=True)
class Unable:
    """The setting a candidate cannot honour, and why (in words a client can act on)."""

    setting: str
    reason: str


def required_capabilities(request: CompletionInput) -> tuple[str, ...]:
    """The catalog capabilities ``request`` needs: tools (declared, or calls and results in the
    conversation), vision (an image), documents (a PDF; a text document goes as text anywhere),
    reasoning (a reasoning setting)."""
    needed = []
    messages = request.messages
    if request.tools or any(m.tool_calls or m.role == "tool" for m in messages):
        needed.append("tools")
    parts = [part for m in messages if m.parts for part in m.parts]
    if parts:  # most conversations are text alone
        if any(isinstance(p, ImagePart) for p in parts):
            needed.append("vision")
        if any(isinstance(p, DocumentPart) and p.media_type == "application/pdf" for p in parts):
            needed.append("documents")
    if request.reasoning is not None:
        needed.append("reasoning")
    return tuple(needed)


def unable(
    model: ModelInfo, request: CompletionInput, needed: Sequence[str] | None = None
) -> Unable | None:
    """Why ``model`` cannot serve ``request`` as asked; None when it can. ``needed``: the
    request's :func:`required_capabilities`, when the caller computed them once for every
    candidate."""
    for capability in required_capabilities(request) if needed is None else needed:
        if capability not in model.capabilities:
            return Unable(capability, f"{model.id} has no {capability} capability")
    rules = model.rules
    asked: list[str] = []
    if request.temperature is not None:
        asked.append("temperature")
    if request.top_p is not None:
        asked.append("top_p")
    if asked and not rules.sampling:
        return Unable(asked[0], f"{model.id} accepts no {' or '.join(asked)} (a reasoning model)")
    if len(asked) == 2 and rules.temperature_or_top_p:
        return Unable("temperature", f"{model.id} accepts temperature or top_p, not both")
    temperature = request.temperature
    if temperature is not None and temperature > rules.temperature_max:
        return Unable(
            "temperature",
            f"{model.id} accepts temperature from 0 to {rules.temperature_max:g}, "
            f"got {temperature:g}",
        )
    return None


def none_able(
    skipped: Sequence[tuple[str, Unable]], *, able_models: Sequence[str] = ()
) -> InvalidRequest:
    """The error when every candidate was skipped: ``skipped`` holds (provider, why) pairs;
    ``able_models`` names models that have the missing capability, when one is missing."""
    settings = list(dict.fromkeys(why.setting for _, why in skipped))
    reasons = "; ".join(dict.fromkeys(f"{why.reason} ({provider})" for provider, why in skipped))
    message = f"{', '.join(settings)}: no candidate can honour it: {reasons}"
    if able_models:
        message += f"; models with {settings[0]}: {', '.join(able_models)}"
    return InvalidRequest(message)


def models_with(catalog: Catalog, capability: str, providers: Sequence[str]) -> list[str]:
    """Up to eight chat models of ``providers`` that have ``capability``, for error messages."""
    if capability not in CAPABILITIES:
        return []
    found = [
        f"{m.id} ({m.provider})"
        for provider in providers
        for m in catalog.chat_models(provider)
        if capability in m.capabilities
    ]
    return found[:8]
