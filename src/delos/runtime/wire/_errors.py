"""The one error the wire-format parsers raise."""

from __future__ import annotations

__all__ = ["WireProtocolError"]


class WireProtocolError(ValueError):
    """Bytes from upstream do not follow the wire format, or end in the middle of a unit.

    Raised by every decoder in this package for malformed framing, failed checksums, oversized
    units and truncated input. It subclasses `ValueError` because the input, not the program, is
    at fault; the runtime's error layer turns it into an upstream protocol error.
    """
