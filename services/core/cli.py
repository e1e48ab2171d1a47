"""The ``citysense`` command: ``up``, ``migrate``, ``ingest``, ``api``, ``simulate``, ``settings``.

Each service command runs against whatever database and broker the ``CITYSENSE_*`` settings name,
so operators can run them one by one; ``up`` starts the whole local stack around them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from services.core import logs
from services.core.settings import Settings

log = logging.getLogger("citysense")


def _settings(**overrides) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [f"  CITYSENSE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
        sys.exit("citysense: bad settings\n" + "\n".join(lines))


def cmd_migrate(args) -> int:
    from services.core.migrate import migrate

    s = _settings()
    applied = migrate(s.dsn)
    log.info("migrations applied: %s", applied or "none (schema up to date)")
    return 0


def cmd_ingest(args) -> int:
    from services.ingest.service import run

    return run(_settings())


def cmd_api(args) -> int:
    from services.api.server import serve

    return serve(_settings())


def cmd_simulate(args) -> int:
    from simulators.run import run

    overrides = {}
    if args.devices is not None:
        overrides["sim_devices"] = args.devices
    if args.interval is not None:
        overrides["sim_interval_s"] = args.interval
    if args.seed is not None:
        overrides["sim_seed"] = args.seed
    return run(_settings(**overrides), duration_s=args.duration, register=not args.no_register)


def cmd_up(args) -> int:
    from services.core.up import up

    overrides = {}
    if args.devices is not None:
        overrides["sim_devices"] = args.devices
    return up(_settings(**overrides), simulator=not args.no_simulator)


def cmd_settings(args) -> int:
    """Print the settings table (Markdown) that the README carries."""
    print("| variable | default | meaning |\n|---|---|---|")
    for name, field in Settings.model_fields.items():
        default = field.default
        if hasattr(default, "get_secret_value"):
            default = "(secret)" if default.get_secret_value() else "(empty)"
        print(f"| `CITYSENSE_{name.upper()}` | `{default}` | {field.description} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="citysense", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole system locally: database, broker, migrations, ingestor, API, simulated fleet")
    up.add_argument("--no-simulator", action="store_true", help="do not start the simulated fleet")
    up.add_argument("--devices", type=int, help="devices in the simulated fleet (CITYSENSE_SIM_DEVICES)")
    sub.add_parser("migrate", help="apply pending database migrations")
    sub.add_parser("ingest", help="run the MQTT → TimescaleDB ingestor")
    sub.add_parser("api", help="run the HTTP API")
    sim = sub.add_parser("simulate", help="register and run a simulated fleet of devices")
    sim.add_argument("--devices", type=int, help="number of devices (CITYSENSE_SIM_DEVICES)")
    sim.add_argument("--interval", type=float, help="seconds between two readings of a device (CITYSENSE_SIM_INTERVAL_S)")
    sim.add_argument("--seed", type=int, help="random seed (CITYSENSE_SIM_SEED)")
    sim.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until stopped)")
    sim.add_argument("--no-register", action="store_true", help="do not register the fleet's devices first")
    sub.add_parser("settings", help="print the table of settings")
    args = p.parse_args(argv)
    logs.setup()
    handlers = {"up": cmd_up, "migrate": cmd_migrate, "ingest": cmd_ingest, "api": cmd_api,
                "simulate": cmd_simulate, "settings": cmd_settings}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
