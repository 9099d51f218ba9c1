"""Vertex AI's host for a location, shared by its Gemini and Claude adapters."""

from __future__ import annotations

__all__ = ["vertex_base_url"]


def vertex_base_url(location: str) -> str:
    """Vertex AI's host for ``location``: regional, the global host, or a multi-region one."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    if location in ("us", "eu"):
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"
