"""US National Weather Service heat index (NWS/WPC "The Heat Index Equation"; Rothfusz, NWS SR 90-23).
Pure functions; temperatures in °F inside, °C at the edges."""

from __future__ import annotations

import math

#: Current NWS wording, lower bound inclusive (°F).
CATEGORIES = ((125.0, "Extreme Danger"), (103.0, "Danger"), (90.0, "Extreme Caution"), (80.0, "Caution"))


def c_to_f(c: float) -> float:
    return c * 9 / 5 + 32


def f_to_c(f: float) -> float:
    return (f - 32) * 5 / 9


def heat_index_f(t_f: float, rh: float) -> float:
    """Heat index in °F from air temperature (°F) and relative humidity (%).

    As NWS describes it: the simple formula first, averaged with the temperature; when that average is
    80 °F or more, the Rothfusz regression with its low- and high-humidity adjustments instead.
    """
    simple = 0.5 * (t_f + 61.0 + (t_f - 68.0) * 1.2 + rh * 0.094)
    if (simple + t_f) / 2 < 80.0:
        return simple
    hi = (-42.379 + 2.04901523 * t_f + 10.14333127 * rh - 0.22475541 * t_f * rh
          - 0.00683783 * t_f * t_f - 0.05481717 * rh * rh + 0.00122874 * t_f * t_f * rh
          + 0.00085282 * t_f * rh * rh - 0.00000199 * t_f * t_f * rh * rh)
    if rh < 13 and 80 <= t_f <= 112:
        hi -= ((13 - rh) / 4) * math.sqrt((17 - abs(t_f - 95.0)) / 17)
    elif rh > 85 and 80 <= t_f <= 87:
        hi += ((rh - 85) / 10) * ((87 - t_f) / 5)
    return hi


def category(hi_f: float) -> str | None:
    for bound, name in CATEGORIES:
        if hi_f >= bound:
            return name
    return None
