"""Where a request looks: the whole city, one CSA, one neighbourhood or one device, resolved to the
devices it covers. Names are checked against the city's areas, so a typo is a 404, not an empty answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated

from fastapi import Query

from services.api.problems import Problem
from services.core.areas import baltimore


#: Printable text only: PostgreSQL refuses NUL, and no area name holds a control character.
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
CsaParam = Annotated[str | None, Query(max_length=100, pattern=PRINTABLE,
                                       description="A Community Statistical Area (see /v1/areas).")]
NeighbourhoodParam = Annotated[str | None, Query(max_length=100, pattern=PRINTABLE,
                                                 description="A neighbourhood (see /v1/areas?level=neighbourhood).")]


@dataclass(frozen=True)
class Scope:
    level: str  # city, csa, neighbourhood, device
    name: str | None

    def key(self) -> tuple[str, str | None]:
        """(level, name), as the store takes it."""
        return self.level, self.name

    def public(self) -> dict:
        return {"level": self.level, "name": self.name}


def resolve(csa: str | None, neighbourhood: str | None, device_id: str | None) -> Scope:
    given = [(k, v) for k, v in (("csa", csa), ("neighbourhood", neighbourhood), ("device", device_id)) if v is not None]
    if len(given) > 1:
        raise Problem(422, "give at most one of csa, neighbourhood and device_id")
    if not given:
        return Scope("city", None)
    level, name = given[0]
    areas = baltimore()
    if level == "csa" and name not in areas.csas:
        raise Problem(404, f"no Community Statistical Area named {name!r} (see /v1/areas?level=csa)")
    if level == "neighbourhood" and name not in areas.neighbourhoods:
        raise Problem(404, f"no neighbourhood named {name!r} (see /v1/areas?level=neighbourhood)")
    return Scope(level, name)


#: Times outside this span are refused: no reading predates 1970, and far-off dates overflow date maths.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)


def time_range(start: datetime | None, end: datetime | None, max_days: int,
               default: timedelta = timedelta(days=1), too_wide: str | None = None) -> tuple[datetime, datetime]:
    """A bounded [start, end) range from optional query parameters (end defaults to now, start to
    end − ``default``): offsets required, start before end, at most ``max_days`` wide, inside 1970–2100."""
    for name, t in (("start", start), ("end", end)):
        if t is None:
            continue
        if t.tzinfo is None:
            raise Problem(422, f"{name}: give a UTC offset (e.g. 2024-06-01T00:00:00Z)")
        if not EARLIEST <= t <= LATEST:
            raise Problem(422, f"{name}: must lie between 1970 and 2100")
    end = end or datetime.now(timezone.utc)
    start = start or max(end - default, EARLIEST)
    if start >= end:
        raise Problem(422, "start must be before end")
    if end - start > timedelta(days=max_days):
        raise Problem(422, too_wide or f"the range from start to end may cover at most {max_days} days")
    return start, end


def moment(at: datetime | None, max_age_days: int = 3660) -> datetime:
    """``at`` (a past moment; default now), checked: with an offset, not in the future, not absurdly old."""
    now = datetime.now(timezone.utc)
    if at is None:
        return now
    if at.tzinfo is None:
        raise Problem(422, "at: give a UTC offset (e.g. 2024-06-01T12:00:00Z)")
    if at > now + timedelta(minutes=5):
        raise Problem(422, "at: must not be in the future")
    if at < now - timedelta(days=max_age_days):
        raise Problem(422, f"at: at most {max_age_days} days ago")
    return at


def floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)
