"""US EPA Air Quality Index, with the breakpoints in force since 6 May 2024 (EPA-454/B-24-002;
AirNow "The AQI Equation (2024)"), and the PM NowCast. Pure functions.

Decimal arithmetic throughout the lookup: truncating binary floats can push a value across a breakpoint
(325.4 → 325.40000000000003), and EPA rounds the index half up, where Python's round() goes to even.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from functools import lru_cache

from services.core.catalogue import POLLUTANTS

BANDS = ((0, 50, "Good"), (51, 100, "Moderate"), (101, 150, "Unhealthy for Sensitive Groups"),
         (151, 200, "Unhealthy"), (201, 300, "Very Unhealthy"), (301, 500, "Hazardous"))
COLOURS = {"Good": "#00E400", "Moderate": "#FFFF00", "Unhealthy for Sensitive Groups": "#FF7E00",
           "Unhealthy": "#FF0000", "Very Unhealthy": "#8F3F97", "Hazardous": "#7E0023"}
BEYOND = "Beyond the AQI"

# Concentration breakpoints per band (None: the band is not defined for that averaging period).
# Units: O3 ppm, PM µg/m³, CO ppm, SO2 and NO2 ppb.
_TABLE: dict[str, tuple[tuple[str, str] | None, ...]] = {
    "o3_8h": (("0.000", "0.054"), ("0.055", "0.070"), ("0.071", "0.085"), ("0.086", "0.105"), ("0.106", "0.200"), None),
    "o3_1h": (None, None, ("0.125", "0.164"), ("0.165", "0.204"), ("0.205", "0.404"), ("0.405", "0.604")),
    "pm25_24h": (("0.0", "9.0"), ("9.1", "35.4"), ("35.5", "55.4"), ("55.5", "125.4"), ("125.5", "225.4"), ("225.5", "325.4")),
    "pm10_24h": (("0", "54"), ("55", "154"), ("155", "254"), ("255", "354"), ("355", "424"), ("425", "604")),
    "co_8h": (("0.0", "4.4"), ("4.5", "9.4"), ("9.5", "12.4"), ("12.5", "15.4"), ("15.5", "30.4"), ("30.5", "50.4")),
    "so2_1h": (("0", "35"), ("36", "75"), ("76", "185"), ("186", "304"), None, None),
    "so2_24h": (None, None, None, None, ("305", "604"), ("605", "1004")),
    "no2_1h": (("0", "53"), ("54", "100"), ("101", "360"), ("361", "649"), ("650", "1249"), ("1250", "2049")),
}
_BANDS_DEC: dict[str, tuple[tuple[Decimal, Decimal] | None, ...]] = {
    t: tuple(None if bp is None else (Decimal(bp[0]), Decimal(bp[1])) for bp in bands) for t, bands in _TABLE.items()}
#: Truncation step per pollutant (the concentration's unit as in _TABLE).
TRUNCATION = {"o3_8h": "0.001", "o3_1h": "0.001", "pm25_24h": "0.1", "pm10_24h": "1", "co_8h": "0.1",
              "so2_1h": "1", "so2_24h": "1", "no2_1h": "1"}


def category(aqi: int | None) -> str | None:
    if aqi is None:
        return None
    for lo, hi, name in BANDS:
        if lo <= aqi <= hi:
            return name
    return BEYOND


_STEP = {t: Decimal(step) for t, step in TRUNCATION.items()}
_ONE = Decimal(1)


#: Decimal places of each table's truncation step, and 10 to that power as a float.
_PLACES = {t: -step.as_tuple().exponent for t, step in _STEP.items()}
_SCALE = {t: float(10 ** p) for t, p in _PLACES.items()}


def truncate(value: float, table: str) -> Decimal:
    """EPA truncation (not rounding) of a concentration, as done on its decimal text. Fast path: scaled to
    the step, a value that is not within a millionth of a whole number truncates like its text (the
    product's rounding error is a few units in the last place); one that is, or a negative one, goes
    through its text (tests/unit/test_qol.py checks both agree)."""
    value = float(value)
    scaled = value * _SCALE[table]
    if 0.0 <= scaled < 1e12:
        whole = int(scaled)
        if 1e-6 < scaled - whole < 1 - 1e-6:
            return Decimal(whole).scaleb(-_PLACES[table])
    return _truncate_text(value, table)


def _truncate_text(value: float, table: str) -> Decimal:
    return Decimal(repr(value)).quantize(_STEP[table], rounding=ROUND_DOWN)


def sub_index(concentration: float, table: str) -> int | None:
    """The AQI of one concentration, or None when this averaging period defines no band for it
    (e.g. 1-hour ozone below 0.125 ppm). Above the table's top: 501, reported as "Beyond the AQI"."""
    return _index_of(truncate(max(concentration, 0.0), table), table)


@lru_cache(maxsize=8192)
def _index_of(c: Decimal, table: str) -> int | None:
    """The lookup of a truncated concentration (few distinct values: one city-wide summary asks ~2,000)."""
    top = None
    for (i_lo, i_hi, _), bp in zip(BANDS, _BANDS_DEC[table]):
        if bp is None:
            continue
        lo, hi = bp
        top = hi
        if lo <= c <= hi:
            value = (Decimal(i_hi - i_lo) / (hi - lo)) * (c - lo) + i_lo
            return int(value.quantize(_ONE, rounding=ROUND_HALF_UP))
    if top is not None and c > top:
        return 501
    return None


def nowcast(hourly: list[float | None], pollutant: str = "pm25") -> float | None:
    """PM NowCast from hourly means, most recent first (``hourly[0]`` is the latest complete hour; None
    marks a missing hour). Uses up to 12 hours; valid only when at least 2 of the 3 most recent hours
    are present. Returns the NowCast truncated as EPA truncates it before the lookup."""
    hours = list(hourly[:12])
    if sum(1 for c in hours[:3] if c is not None) < 2:
        return None
    present = [c for c in hours if c is not None]
    c_min, c_max = min(present), max(present)
    w = 1.0 if c_max <= 0 else max(c_min / c_max, 0.5)
    num = sum(c * w ** i for i, c in enumerate(hours) if c is not None)
    den = sum(w ** i for i, c in enumerate(hours) if c is not None)
    table = "pm25_24h" if pollutant == "pm25" else "pm10_24h"
    return float(truncate(num / den, table))


def mean_of_valid(hourly: list[float | None], hours: int, need: int) -> float | None:
    """The mean of the first ``hours`` hourly values when at least ``need`` are present (EPA's 75 % rule:
    6 of 8 hours for 8-hour averages, 18 of 24 for 24-hour ones)."""
    window = [c for c in hourly[:hours] if c is not None]
    return sum(window) / len(window) if len(window) >= need else None


@dataclass(frozen=True)
class PollutantAQI:
    pollutant: str
    concentration: float | None  # in the unit of the AQI table used (O3 in ppm), truncated
    unit: str
    aqi: int | None
    averaging: str


def pollutant_aqi(pollutant: str, hourly: list[float | None]) -> PollutantAQI:
    """The sub-index (501 above the table: "Beyond the AQI") of one pollutant from its hourly means (most recent first, in citysense's catalogue
    units: µg/m³, ppb for O3/NO2/SO2, ppm for CO), with the averaging EPA prescribes for it."""
    if pollutant in ("pm25", "pm10"):
        c = nowcast(hourly, pollutant)
        table = f"{pollutant}_24h"
        return PollutantAQI(pollutant, c, "µg/m³", None if c is None else sub_index(c, table), "NowCast (12 h)")
    if pollutant == "o3":
        # 8-hour ozone is the rule; the 1-hour table (defined from 0.125 ppm) applies where it gives the
        # higher, more precautionary index, and above the 8-hour table's top (0.200 ppm).
        c8 = mean_of_valid(hourly, 8, 6)
        c1 = hourly[0] if hourly else None
        options = []
        if c8 is not None:
            options.append((sub_index(c8 / 1000, "o3_8h"), "8 h", c8))
        if c1 is not None and (i1 := sub_index(c1 / 1000, "o3_1h")) is not None:
            options.append((i1, "1 h", c1))
        if len(options) == 2 and options[0][0] == 501:
            options.pop(0)
        if not options:
            return PollutantAQI("o3", None, "ppm", None, "8 h")
        i, averaging, c = max(options, key=lambda o: o[0])
        return PollutantAQI("o3", float(truncate(c / 1000, "o3_8h")), "ppm", i, averaging)
    if pollutant == "co":
        c = mean_of_valid(hourly, 8, 6)
        return PollutantAQI("co", None if c is None else float(truncate(c, "co_8h")), "ppm",
                            None if c is None else sub_index(c, "co_8h"), "8 h")
    if pollutant == "no2":
        c = hourly[0] if hourly else None
        return PollutantAQI("no2", None if c is None else float(truncate(c, "no2_1h")), "ppb",
                            None if c is None else sub_index(c, "no2_1h"), "1 h")
    if pollutant == "so2":
        c = hourly[0] if hourly else None
        if c is None:
            return PollutantAQI("so2", None, "ppb", None, "1 h")
        i1 = sub_index(c, "so2_1h")
        if i1 is not None and i1 != 501:
            return PollutantAQI("so2", float(truncate(c, "so2_1h")), "ppb", i1, "1 h")
        # Above 304 ppb the 1-hour table ends: AQI 200 and up comes from the 24-hour average; when that
        # is below 305 ppb, EPA reports 200.
        c24 = mean_of_valid(hourly, 24, 18)
        if c24 is None:
            return PollutantAQI("so2", float(truncate(c, "so2_1h")), "ppb", None, "24 h")
        i24 = sub_index(c24, "so2_24h")
        return PollutantAQI("so2", float(truncate(c24, "so2_24h")), "ppb", 200 if i24 is None else i24, "24 h")
    raise ValueError(f"no AQI for {pollutant}")


AQI_POLLUTANTS = POLLUTANTS

#: The hours of hourly means each pollutant's rule reads (most recent first): NowCast 12, ozone and CO 8,
#: NO2 1, SO2 1 (24 when the 1-hour table is exceeded).
WINDOWS = {"pm25": 12, "pm10": 12, "o3": 8, "co": 8, "no2": 1, "so2": 24}
assert set(WINDOWS) == set(AQI_POLLUTANTS)


@dataclass(frozen=True)
class OverallAQI:
    aqi: int | None
    category: str | None
    main_pollutant: str | None


def overall(pollutants: list[PollutantAQI]) -> OverallAQI:
    """The highest sub-index and its pollutant; None when no pollutant has a valid value."""
    valid = [p for p in pollutants if p.aqi is not None]
    if not valid:
        return OverallAQI(None, None, None)
    best = max(valid, key=lambda p: p.aqi)
    return OverallAQI(min(best.aqi, 500), category(best.aqi), best.pollutant)
