"""Whether a candidate can honour a request as asked, and why not.

A candidate that cannot is skipped (the reason goes into the answer's attempts), never sent a
clamped or dropped setting: a request means the same whichever candidate the router picks. When
no candidate can, the request is refused with INVALID_ARGUMENT naming the setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from delos.runtime.catalog import ModelInfo
from delos.runtime.errors import InvalidRequest
from delos.runtime.inputs import CompletionInput

__all__ = ["Unable", "none_able", "unable"]


@dataclass(frozen=True, slots=True)
class Unable:
    """The setting a candidate cannot honour, and why (in words a client can act on)."""

    setting: str
    reason: str


def unable(model: ModelInfo, request: CompletionInput) -> Unable | None:
    """Why ``model`` cannot serve ``request`` as asked; None when it can."""
    rules = model.rules
    asked = [name for name in ("temperature", "top_p") if getattr(request, name) is not None]
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


def none_able(skipped: Sequence[tuple[str, Unable]]) -> InvalidRequest:
    """The error when every candidate was skipped: ``skipped`` holds (provider, why) pairs."""
    settings = list(dict.fromkeys(why.setting for _, why in skipped))
    reasons = "; ".join(dict.fromkeys(f"{why.reason} ({provider})" for provider, why in skipped))
    return InvalidRequest(f"{', '.join(settings)}: no candidate can honour it: {reasons}")
