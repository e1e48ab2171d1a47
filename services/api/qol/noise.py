"""Noise levels: decibels average as energy (WHO 2018; EU Directive 2002/49/EC Annex I; US EPA 1974).
Pure functions over levels in dB(A)."""

from __future__ import annotations

import math

from services.core.catalogue import noise_period as period  # noqa: F401 - the one definition of the periods

#: Guideline levels (dB), for the exceedance counts.
WHO_LDEN = 53.0  # WHO 2018, road traffic, Lden
WHO_LNIGHT = 45.0  # WHO 2018, road traffic, Lnight
EPA_LDN = 55.0  # EPA 1974, outdoors in residential areas (Ldn)
EPA_LEQ24 = 70.0  # EPA 1974, 24-hour Leq to protect hearing


def energy(level_db: float) -> float:
    return 10 ** (level_db / 10)


def level(mean_energy: float) -> float:
    return 10 * math.log10(mean_energy)


def leq(levels: list[float], durations: list[float] | None = None) -> float | None:
    """Equivalent continuous level of levels held for the given durations (equal if omitted)."""
    if not levels:
        return None
    durations = durations or [1.0] * len(levels)
    return level(sum(t * energy(x) for x, t in zip(levels, durations)) / sum(durations))


def lden(l_day: float, l_evening: float, l_night: float) -> float:
    return level((12 * energy(l_day) + 4 * energy(l_evening + 5) + 8 * energy(l_night + 10)) / 24)


def exceeds_who(hour: int, leq_db: float) -> bool:
    """An hour above the WHO level for its time of day: Lnight's 45 dB at night, Lden's 53 dB otherwise."""
    return leq_db > (WHO_LNIGHT if period(hour) == "night" else WHO_LDEN)


def exceeds_epa(leq_db: float) -> bool:
    return leq_db > EPA_LDN
