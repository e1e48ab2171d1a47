"""Opaque keyset cursors: the last item's sort key, base64url-encoded JSON. Keyset pagination keeps
every page as cheap as the first, however deep a client pages."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from services.api.problems import Problem


def encode(key: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(cursor: str | None, shape: tuple[type, ...]) -> list | None:
    """The key a cursor carries, checked against the types expected (``datetime``: RFC 3339 text); a 400
    problem when it is not one of ours."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Problem(400, "cursor is not valid: pass back the next_cursor of a previous page unchanged") from None
    wire = tuple(str if t is datetime else t for t in shape)
    if not isinstance(key, list) or len(key) != len(shape) or not all(
        isinstance(v, t) and not isinstance(v, bool) and (not isinstance(v, str) or v.isprintable())
        for v, t in zip(key, wire)
    ):
        raise Problem(400, "cursor is not valid: pass back the next_cursor of a previous page unchanged")
    try:
        return [datetime.fromisoformat(v) if t is datetime else v for v, t in zip(key, shape)]
    except ValueError:
        raise Problem(400, "cursor is not valid: pass back the next_cursor of a previous page unchanged") from None


def page_size(limit: int | None, settings) -> int:
    """The page size a list request asked for, within CITYSENSE_API_MAX_PAGE_SIZE."""
    if limit is None:
        return min(settings.api_default_page_size, settings.api_max_page_size)
    if limit > settings.api_max_page_size:
        raise Problem(422, f"limit: at most {settings.api_max_page_size}")
    return limit
