"""The quality-of-life maths, pinned to published tables and examples."""

import math

import pytest

from services.api.qol import aqi, heat, noise

# --- AQI (EPA 2024 breakpoints) -------------------------------------------------------------------


@pytest.mark.parametrize("table, conc, expected", [
    # every band edge of the 2024 table lands on its index
    ("pm25_24h", 0.0, 0), ("pm25_24h", 9.0, 50), ("pm25_24h", 9.1, 51), ("pm25_24h", 35.4, 100),
    ("pm25_24h", 35.5, 101), ("pm25_24h", 55.4, 150), ("pm25_24h", 55.5, 151), ("pm25_24h", 125.4, 200),
    ("pm25_24h", 125.5, 201), ("pm25_24h", 225.4, 300), ("pm25_24h", 225.5, 301), ("pm25_24h", 325.4, 500),
    ("pm10_24h", 54, 50), ("pm10_24h", 55, 51), ("pm10_24h", 154, 100), ("pm10_24h", 604, 500),
    ("o3_8h", 0.054, 50), ("o3_8h", 0.055, 51), ("o3_8h", 0.070, 100), ("o3_8h", 0.085, 150), ("o3_8h", 0.200, 300),
    ("co_8h", 4.4, 50), ("co_8h", 9.4, 100), ("co_8h", 50.4, 500),
    ("no2_1h", 53, 50), ("no2_1h", 100, 100), ("no2_1h", 360, 150), ("no2_1h", 2049, 500),
    ("so2_1h", 35, 50), ("so2_1h", 75, 100), ("so2_1h", 304, 200),
])
def test_band_edges(table, conc, expected):
    assert aqi.sub_index(conc, table) == expected


def test_truncation_not_rounding():
    assert aqi.sub_index(9.09, "pm25_24h") == 50  # 9.09 → 9.0, not 9.1
    assert aqi.sub_index(35.49, "pm25_24h") == 100
    assert aqi.sub_index(0.0709, "o3_8h") == 100  # 0.0709 → 0.070 ppm


def test_fast_truncation_agrees_with_the_decimal_text():
    """The fast path (scaled float) against truncating the value's decimal text, over random values, every
    breakpoint and its float neighbours, and values built to sit on a step."""
    import random
    rnd = random.Random(5)
    values = [rnd.uniform(0, 700) for _ in range(20_000)] + [rnd.uniform(0, 0.7) for _ in range(20_000)]
    values += [round(rnd.uniform(0, 600), 1) for _ in range(5_000)] + [round(rnd.uniform(0, 0.6), 3) for _ in range(5_000)]
    values += [0.1 + 0.2, 325.4, 325.40000000000003, 9.099999999999998, 0.0, -0.0, -3.2, 1e-300, 1e15]
    for bands in aqi._TABLE.values():
        for bp in filter(None, bands):
            for edge in map(float, bp):
                values += [edge, math.nextafter(edge, 0), math.nextafter(edge, math.inf)]
    for table in aqi.TRUNCATION:
        for v in values:
            fast, text = aqi.truncate(v, table), aqi._truncate_text(v, table)
            assert fast == text and float(fast) == float(text), (v, table, fast, text)


def test_binary_float_pitfall_at_the_top():
    assert aqi.sub_index(325.4, "pm25_24h") == 500
    assert aqi.sub_index(325.5, "pm25_24h") == 501  # beyond the AQI


def test_worked_example_multiple_pollutants_2024_table():
    """The classic EPA teaching example (8-h O3 0.077 ppm, PM2.5 54.4 µg/m³, CO 8.4 ppm), recomputed
    with the 2024 breakpoints: PM2.5 = 49/19.9·18.9 + 101 = 147.5 → 148 (half up), O3 122, CO 90."""
    assert aqi.sub_index(54.4, "pm25_24h") == 148
    assert aqi.sub_index(0.077, "o3_8h") == 122
    assert aqi.sub_index(8.4, "co_8h") == 90
    ps = [aqi.PollutantAQI("pm25", 54.4, "µg/m³", 148, "NowCast"), aqi.PollutantAQI("o3", 0.077, "ppm", 122, "8 h"),
          aqi.PollutantAQI("co", 8.4, "ppm", 90, "8 h")]
    o = aqi.overall(ps)
    assert (o.aqi, o.category, o.main_pollutant) == (148, "Unhealthy for Sensitive Groups", "pm25")


def test_rounding_is_half_up():
    # 8-h ozone 0.078 ppm: 49/0.014·0.007 + 101 = 125.5 exactly → 126
    assert aqi.sub_index(0.078, "o3_8h") == 126
    # PM2.5 12.0: 49/26.3·2.9 + 51 = 56.40 → 56
    assert aqi.sub_index(12.0, "pm25_24h") == 56


def test_nowcast_epa_worked_example():
    """EPA's NowCast example: 12 hourly PM2.5 values, oldest first 50 80 75 90 82 53 64 74 21 10 16 13;
    range 80 / max 90 → w* 0.11 → w = 0.5; NowCast 17.4 µg/m³."""
    oldest_first = [50, 80, 75, 90, 82, 53, 64, 74, 21, 10, 16, 13]
    assert aqi.nowcast(list(reversed(oldest_first))) == 17.4


def test_nowcast_steady_air_is_the_plain_average():
    assert aqi.nowcast([12.0] * 12) == 12.0


def test_nowcast_needs_two_of_the_three_latest_hours():
    assert aqi.nowcast([None, None, 10, 10, 10]) is None
    assert aqi.nowcast([None, 10, 10]) == 10.0
    assert aqi.nowcast([10, None, None, 10]) is None


def test_nowcast_skips_missing_hours_keeping_their_weights():
    # c1=20, c2 missing, c3=10: w = 0.5 → (20 + 10·0.25) / (1 + 0.25) = 18.0
    assert aqi.nowcast([20, None, 10]) == 18.0


def test_pollutant_averaging_rules():
    assert aqi.pollutant_aqi("pm25", [40.0] * 12).aqi == aqi.sub_index(40.0, "pm25_24h")
    o3 = aqi.pollutant_aqi("o3", [60.0] * 8)  # ppb
    assert (o3.aqi, o3.averaging, o3.concentration) == (aqi.sub_index(0.060, "o3_8h"), "8 h", 0.060)
    assert aqi.pollutant_aqi("o3", [60.0] * 5).aqi is None  # fewer than 6 of 8 hours
    spike = aqi.pollutant_aqi("o3", [180.0] + [40.0] * 7)  # 1-h 0.180 ppm beats the 8-h mean
    assert spike.averaging == "1 h" and spike.aqi == aqi.sub_index(0.180, "o3_1h")
    assert aqi.pollutant_aqi("co", [5.0] * 8).aqi == aqi.sub_index(5.0, "co_8h")
    assert aqi.pollutant_aqi("no2", [120.0]).aqi == aqi.sub_index(120, "no2_1h")
    so2 = aqi.pollutant_aqi("so2", [400.0] + [100.0] * 23)  # 1-h above 304, 24-h mean below 305 → 200
    assert (so2.aqi, so2.averaging) == (200, "24 h")


def test_no_data_means_no_index():
    o = aqi.overall([aqi.pollutant_aqi(p, []) for p in aqi.AQI_POLLUTANTS])
    assert (o.aqi, o.category, o.main_pollutant) == (None, None, None)


# --- heat index (NWS chart) --------------------------------------------------------------------------


def test_an_areas_kept_aqi_rebuilds_the_same_answer():
    """What the background job keeps of an area's answer (services/api/qol/history.py) rebuilds exactly the
    answer computed from the devices' hours, through JSON as the database stores it: random areas of up to
    four devices with gaps, high values (beyond the AQI, SO2's 24-hour rule) and no data at all."""
    import json
    import random

    from services.api.qol import indicators
    from services.api.qol.series import DeviceSeries

    rnd = random.Random(5)
    top = {"pm25": 400, "pm10": 700, "o3": 250, "co": 60, "no2": 2500, "so2": 1100}
    seen_null = seen_beyond = 0
    for _ in range(3000):
        hours = {}
        for p, window in aqi.WINDOWS.items():
            for d in range(rnd.randint(0, 4) if rnd.random() < 0.8 else 0):
                values = [None if rnd.random() < 0.2 else rnd.uniform(0, top[p]) * rnd.random() ** 2 for _ in range(window)]
                hours.setdefault(p, {})[f"dev-{d}"] = DeviceSeries(f"dev-{d}", "X", "", values)
        answer = indicators.area_aqi(hours)
        stored = json.loads(json.dumps(indicators.kept_pollutants(answer)))
        assert indicators.kept_area_aqi(answer["aqi"], answer["category"], answer["main_pollutant"], stored) == answer
        seen_null += answer["aqi"] is None
        seen_beyond += any((v["aqi"] or 0) >= 500 for v in answer["pollutants"].values())
    assert seen_null and seen_beyond


@pytest.mark.parametrize("t_f, rh, chart", [
    (80, 40, 80), (80, 80, 84), (84, 60, 88), (86, 90, 105), (88, 50, 91), (90, 50, 95), (90, 70, 106),
    (92, 40, 94), (96, 45, 104), (100, 40, 109), (104, 40, 119), (110, 40, 136),
])
def test_heat_index_matches_the_nws_chart(t_f, rh, chart):
    assert round(heat.heat_index_f(t_f, rh)) == chart


def test_simple_formula_below_80():
    assert heat.heat_index_f(70, 50) == pytest.approx(0.5 * (70 + 61 + 2 * 1.2 + 50 * 0.094))


def test_heat_index_adjustments():
    base = lambda t, rh: (-42.379 + 2.04901523 * t + 10.14333127 * rh - .22475541 * t * rh - .00683783 * t * t  # noqa: E731
                          - .05481717 * rh * rh + .00122874 * t * t * rh + .00085282 * t * rh * rh - .00000199 * t * t * rh * rh)
    assert heat.heat_index_f(100, 10) == pytest.approx(base(100, 10) - (3 / 4) * math.sqrt(12 / 17))
    assert heat.heat_index_f(85, 90) == pytest.approx(base(85, 90) + 0.5 * 0.4)


@pytest.mark.parametrize("hi, name", [(79.9, None), (80, "Caution"), (90, "Extreme Caution"), (103, "Danger"),
                                      (124.9, "Danger"), (125, "Extreme Danger")])
def test_heat_categories(hi, name):
    assert heat.category(hi) == name


def test_celsius_round_trip():
    assert heat.f_to_c(heat.c_to_f(32.5)) == pytest.approx(32.5)


# --- noise ---------------------------------------------------------------------------------------------

def test_energy_average():
    assert noise.leq([60, 70]) == pytest.approx(67.40, abs=0.005)
    assert noise.leq([50] * 10) == pytest.approx(50)
    assert noise.leq([80, 40]) == pytest.approx(77.0, abs=0.02)  # the loud half dominates


def test_lden_of_a_constant_level_is_6_4_db_above_it():
    assert noise.lden(60, 60, 60) == pytest.approx(66.40, abs=0.01)


def test_periods_and_guidelines():
    assert [noise.period(h) for h in (6, 7, 18, 19, 22, 23)] == ["night", "day", "day", "evening", "evening", "night"]
    assert noise.exceeds_who(2, 46) and not noise.exceeds_who(12, 46)
    assert noise.exceeds_epa(56) and not noise.exceeds_epa(55)
