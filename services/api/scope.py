"""Where a request looks: the whole city, one CSA, one neighbourhood or one device, resolved to the
devices it covers. Names are checked against the city's areas, so a typo is a 404, not an empty answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from services.api.problems import Problem
from services.core.areas import baltimore


@dataclass(frozen=True)
class Scope:
    level: str  # city, csa, neighbourhood, device
    name: str | None

    def where(self, alias: str = "d") -> tuple[str, dict]:
        """A SQL condition on the devices table (bound parameters only) and its parameters."""
        if self.level == "city":
            return "TRUE", {}
        column = {"csa": "csa", "neighbourhood": "neighbourhood", "device": "device_id"}[self.level]
        return f"{alias}.{column} = %(scope_name)s", {"scope_name": self.name}

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
