"""``citysense simulate``: register a simulated fleet and run it against the broker the settings name.

Modes:
- live (default): each device reports at its interval over its own MQTT 5 connection, with faults,
  outages and backlogs as asked; ``--backfill`` first publishes that much history, as fast as the
  broker takes it (a day of a fleet in seconds, for demos and tests of daily cycles);
- ``--load``: N devices at a target message rate in all; prints the rate it achieved;
- ``--replay FILE.csv``: publish readings from a CSV file (time, device, metric, value), through a bridge
  account (one connection that may publish for any device; the ingestor still checks each device).

The live and load modes register their devices through the API (``CITYSENSE_SIM_API_URL`` with the
admin token) and each device connects with the credentials it was issued.

``--record FILE`` writes one JSON line per message sent: topic, fault, and what the ingestor must store
or reject, so a test can compare sent against stored and rejected.
"""

from __future__ import annotations

from simulators.live import run
from simulators.load import load
from simulators.record import Recorder
from simulators.registration import register_fleet
from simulators.replay import replay

__all__ = ["Recorder", "load", "register_fleet", "replay", "run"]
