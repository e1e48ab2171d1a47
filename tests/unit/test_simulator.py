"""The simulated fleet and its signals: deterministic, placed like a city's sensors, with believable
daily and weekly cycles."""

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.core.areas import baltimore
from simulators import signals
from simulators.devices import message
from simulators.faults import BROKER_REFUSED, FAULTS, FaultRates
from simulators.fleet import MAJOR_ROADS, build_fleet, load_fleet

TZ = ZoneInfo("America/New_York")
WEEKDAY = datetime(2025, 6, 11, tzinfo=TZ)  # a Wednesday
SATURDAY = datetime(2025, 6, 14, tzinfo=TZ)


def at(day, hour):
    return (day + timedelta(hours=hour)).timestamp()


def mean(values):
    return sum(values) / len(values)


def series(kind, device_id, day, hour, metric, n=20, seed=1):
    return mean([signals.readings_for(kind, f"{device_id}-{k}", 39.29, -76.61, at(day, hour) + 7 * k, seed)[metric]
                 for k in range(n)])


def test_same_seed_same_values_other_seed_other_values():
    a = signals.readings_for("air_quality", "d1", 39.3, -76.6, 1.75e9, seed=1)
    assert a == signals.readings_for("air_quality", "d1", 39.3, -76.6, 1.75e9, seed=1)
    assert a != signals.readings_for("air_quality", "d1", 39.3, -76.6, 1.75e9, seed=2)


def test_rush_hour_traffic_and_noise():
    assert series("traffic", "tc", WEEKDAY, 8, "traffic_count") > 3 * series("traffic", "tc", WEEKDAY, 3, "traffic_count")
    assert series("traffic", "tc", WEEKDAY, 17.5, "traffic_count") > 3 * series("traffic", "tc", WEEKDAY, 3, "traffic_count")
    assert series("noise", "nz", WEEKDAY, 8, "noise_laeq") > series("noise", "nz", WEEKDAY, 3, "noise_laeq") + 10
    # weekends: a softer peak
    assert series("traffic", "tc", SATURDAY, 8, "traffic_count") < 0.6 * series("traffic", "tc", WEEKDAY, 8, "traffic_count")


def test_afternoon_heat_and_overnight_humidity():
    temps = {h: series("weather", "wx", WEEKDAY, h, "temperature") for h in range(24)}
    hums = {h: series("weather", "wx", WEEKDAY, h, "humidity") for h in range(24)}
    assert 13 <= max(temps, key=temps.get) <= 17
    assert max(hums, key=hums.get) in (0, 1, 2, 3, 4, 5, 6, 22, 23)
    assert temps[15] - temps[5] > 6


def test_weather_is_shared_by_nearby_devices():
    t = at(WEEKDAY, 14)
    a = signals.readings_for("weather", "wx-a", 39.30, -76.62, t)["temperature"]
    b = signals.readings_for("weather", "wx-b", 39.31, -76.62, t)["temperature"]
    assert abs(a - b) < 2.5


def test_seasons():
    january = datetime(2025, 1, 20, tzinfo=TZ)
    assert series("weather", "wx", WEEKDAY, 15, "temperature") > series("weather", "wx", january, 15, "temperature") + 12


def test_pollution_episodes_happen_and_end():
    start = datetime(2025, 6, 1, tzinfo=TZ).timestamp()
    extra = [signals.episode(1, start + 3600 * h, 39.29, -76.61) for h in range(24 * 14)]
    assert max(extra) > 10  # at least one episode reached downtown in two weeks
    assert sum(1 for e in extra if e > 1) < 0.5 * len(extra)  # but not most of the time


def test_every_value_is_within_the_catalogue_ranges():
    ranges = {"pm25": (0, 1000), "pm10": (0, 2000), "o3": (0, 1000), "no2": (0, 3000), "co": (0, 200), "so2": (0, 2000),
              "noise_laeq": (20, 140), "temperature": (-40, 60), "humidity": (0, 100), "traffic_count": (0, 10000),
              "water_level": (-5, 20), "rainfall": (0, 300)}
    for kind in ("air_quality", "noise", "weather", "traffic", "water"):
        for h in range(0, 24 * 365, 37):
            for metric, v in signals.readings_for(kind, "dev", 39.3, -76.6, 1.7e9 + 3600 * h).items():
                lo, hi = ranges[metric]
                assert lo <= v <= hi and math.isfinite(v), (kind, metric, v)


def test_fleet_covers_every_csa_leans_downtown_and_lines_roads():
    fleet = load_fleet(500)
    areas = baltimore()
    assert len({d.device_id for d in fleet}) == 500
    locs = [areas.locate(d.latitude, d.longitude) for d in fleet]  # raises if any is outside the city
    assert len({loc.csa for loc in locs}) == 55
    near_downtown = sum(1 for d in fleet if math.hypot((d.latitude - 39.2904) * 111, (d.longitude + 76.6122) * 86) < 3)
    assert near_downtown / len(fleet) > 0.2  # a 3 km disc is ~12 % of the city's area

    def road_km(d):
        best = 1e9
        for line in MAJOR_ROADS.values():
            for (a_lat, a_lon), (b_lat, b_lon) in zip(line, line[1:]):
                for f in (i / 50 for i in range(51)):
                    best = min(best, math.hypot((d.latitude - a_lat - f * (b_lat - a_lat)) * 111,
                                                (d.longitude - a_lon - f * (b_lon - a_lon)) * 86))
        return best
    traffic = [d for d in fleet if d.kind == "traffic"]
    assert sum(1 for d in traffic if road_km(d) < 0.4) / len(traffic) > 0.6


def test_fleet_file_is_the_first_devices_of_the_seeded_build():
    assert [d.device_id for d in load_fleet(50)] == [d.device_id for d in build_fleet(500, 1)[:50]]
    assert len(load_fleet(600)) == 600  # more than the file holds: built the same way


def test_every_fault_is_injected_at_its_rate_and_says_what_must_happen():
    fleet = load_fleet(40)
    rates = FaultRates({name: 0.05 for name in FAULTS})
    counts = {}
    for d in fleet:
        for seq in range(100):
            m = message(d, 1.75e9 + 60 * seq, seq, 7, rates)
            counts[m.fault] = counts.get(m.fault, 0) + 1
            if m.fault in BROKER_REFUSED:  # the broker refuses it: the ingestor never sees it
                assert m.refused and m.rejected is None and not m.stored and d.device_id not in m.topic.split("/")[3:4]
            elif m.fault:
                assert m.rejected == FAULTS[m.fault] and not m.refused
    for name in FAULTS:
        assert 120 < counts[name] < 290, (name, counts[name])  # 5 % of 4000 is 200


def test_live_sums_are_for_the_interval_messages_are_really_sent_at():
    """A traffic counter nominally reporting every 60 s, simulated every 10 s (`make run`'s pace): an
    hour's counts must add up to the same traffic, not six times it."""
    import json as _json
    from datetime import datetime as _dt
    from zoneinfo import ZoneInfo

    from simulators.devices import message
    from simulators.fleet import SimDevice

    d = SimDevice("tc-sum", "traffic", 39.2904, -76.6122, 60)
    t0 = _dt(2026, 11, 24, 8, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()  # a weekday rush hour

    def hour_total(interval: int) -> float:
        return sum(_json.loads(message(d, t0 + k * interval, k, 1, interval_s=interval).payload)["readings"]["traffic_count"]
                   for k in range(3600 // interval))

    every_10, every_60 = hour_total(10), hour_total(60)
    assert every_60 > 100 and abs(every_10 - every_60) / every_60 < 0.15
