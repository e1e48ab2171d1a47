"""The ``citysense`` command: ``up``, ``migrate``, ``ingest``, ``api``, ``simulate``, ``broker``, ``settings``.

Each service command runs against whatever database and broker the ``CITYSENSE_*`` settings name,
so operators can run them one by one; ``up`` starts the whole local stack around them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

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
    from services.store.migrate import MigrationError, migrate

    s = _settings()
    try:
        applied = migrate(s.dsn)
    except MigrationError as exc:
        log.error("migrations not applied: %s", exc)
        return 2
    log.info("migrations applied: %s", applied or "none (schema up to date)")
    return 0


def cmd_ingest(args) -> int:
    from services.ingest.service import run

    return run(_settings())


def cmd_api(args) -> int:
    from services.api.server import serve

    return serve(_settings())


def cmd_simulate(args) -> int:
    from simulators import run as sim
    from simulators.faults import FAULTS, FaultRates
    from simulators.fleet import build_fleet, write_fleet

    overrides = {}
    if args.devices is not None:
        overrides["sim_devices"] = args.devices
    if args.interval is not None:
        overrides["sim_interval_s"] = args.interval
    if args.seed is not None:
        overrides["sim_seed"] = args.seed
    s = _settings(**overrides)
    if args.write_fleet:
        write_fleet(build_fleet(s.sim_devices, s.sim_seed), Path(args.write_fleet))
        log.info("wrote %d devices to %s (run it with CITYSENSE_SIM_FLEET_FILE=%s)", s.sim_devices, args.write_fleet,
                 args.write_fleet)
        return 0
    if args.replay:
        return sim.replay(s, args.replay, speed=args.speed, record=args.record)
    if args.load:
        if not args.rate:
            sys.exit("citysense simulate --load needs --rate (messages per second)")
        sim.load(s, args.rate, args.duration or 30, register=not args.no_register)
        return 0
    rates = {name: getattr(args, f"fault_{name}") for name in FAULTS}
    for name, value in rates.items():
        if not 0 <= value <= 1:
            sys.exit(f"citysense simulate: --fault-{name.replace('_', '-')} is a share between 0 and 1")
    if sum(rates.values()) > 1:
        sys.exit("citysense simulate: the fault rates add up to more than 1")
    return sim.run(s, duration_s=args.duration, register=not args.no_register, rate=args.rate,
                   faults=FaultRates(rates, silent=args.silent), record=args.record,
                   backfill_s=args.backfill_hours * 3600, outage_rate=args.outage_rate)


def cmd_up(args) -> int:
    from services.launcher.up import up

    overrides = {}
    if args.devices is not None:
        overrides["sim_devices"] = args.devices
    return up(_settings(**overrides), simulator=not args.no_simulator)


def cmd_broker(args) -> int:
    """Accounts on a broker run with Mosquitto's dynamic security plugin (deploy/mosquitto/README.md)."""
    from services.broker import dynsec
    from services.broker.connect import BrokerUnverified, Endpoint

    s = _settings()
    admin = s.mqtt_admin_password.get_secret_value()
    if not admin:
        sys.exit("citysense broker: set CITYSENSE_MQTT_ADMIN_PASSWORD (the broker's admin account)")
    if args.action == "init-config":
        path = Path(args.name)
        dynsec.write_config(path, s.mqtt_admin_username, admin)
        log.info("wrote %s: citysense's roles and the admin account %r (the broker's plugin_opt_config_file)",
                 path, s.mqtt_admin_username)
        return 0
    password = (s.mqtt_password.get_secret_value() if s.mqtt_password else None) or dynsec.new_password()
    control = dynsec.Control(Endpoint.of(s), s.mqtt_admin_username, admin)
    try:
        if args.action == "retire-ingestor":
            control.retire_ingestor(args.name, s.mqtt_password.get_secret_value() if s.mqtt_password else None)
            log.info("ingestor %r retired: its session and queue are ended, its account deleted", args.name)
            return 0
        (control.add_ingestor if args.action == "add-ingestor" else control.add_bridge)(args.name, password)
    except (dynsec.BrokerUnavailable, dynsec.CommandFailed, BrokerUnverified) as exc:
        log.error("%s", exc)
        return 2
    finally:
        control.close()
    if s.mqtt_password:
        log.info("account %r made with the password in CITYSENSE_MQTT_PASSWORD", args.name)
    else:  # shown once, on standard output only (not in the log)
        print(f"CITYSENSE_MQTT_USERNAME={args.name}\nCITYSENSE_MQTT_PASSWORD={password}")
    return 0


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
    sim.add_argument("--rate", type=float, help="messages per second for the whole fleet (overrides --interval)")
    sim.add_argument("--seed", type=int, help="random seed (CITYSENSE_SIM_SEED)")
    sim.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until stopped)")
    sim.add_argument("--no-register", action="store_true", help="do not register the fleet's devices first")
    sim.add_argument("--backfill-hours", type=float, default=0.0, help="first publish this much history, as fast as possible")
    sim.add_argument("--outage-rate", type=float, default=0.0, help="outages per device per hour, each 2-10 min (last will, buffering, backlog on return)")
    sim.add_argument("--silent", type=float, default=0.0, help="share of devices that never report")
    sim.add_argument("--record", help="append one JSON line per message sent (and what must become of it) to this file")
    from simulators.faults import BROKER_REFUSED, FAULTS

    for name, reason in FAULTS.items():
        outcome = ("published on another device's topic: the broker refuses it" if name in BROKER_REFUSED
                   else f"rejected as {reason}" if reason else "sent twice, stored once")
        sim.add_argument(f"--fault-{name.replace('_', '-')}", dest=f"fault_{name}", type=float, default=0.0,
                         metavar="SHARE", help=f"share of messages with this fault ({outcome})")
    sim.add_argument("--load", action="store_true", help="load mode: --rate messages/s in all for --duration s")
    sim.add_argument("--replay", metavar="CSV", help="publish readings from a CSV file (time, device, metric, value) "
                     "through a bridge account (CITYSENSE_MQTT_USERNAME/PASSWORD; `citysense broker add-bridge`)")
    sim.add_argument("--speed", type=float, default=0.0, help="replay: times real time (0: as fast as possible)")
    sim.add_argument("--write-fleet", metavar="FILE", help="write a fleet definition for --devices and --seed to FILE "
                     "(edit it, then run it with CITYSENSE_SIM_FLEET_FILE=FILE)")
    br = sub.add_parser("broker", help="manage the broker's citysense accounts (dynamic security plugin)")
    br.add_argument("action", choices=["init-config", "add-ingestor", "retire-ingestor", "add-bridge"],
                    help="init-config FILE: write the plugin's file (roles, admin account) for a new broker; "
                         "add-ingestor CLIENT_ID: an account for one ingestor; retire-ingestor CLIENT_ID: end its "
                         "session and queue, and delete its account; add-bridge NAME: an account that may "
                         "publish for any device (a gateway, or `simulate --replay`)")
    br.add_argument("name", help="the file, the ingestor's client id, or the bridge's name")
    sub.add_parser("settings", help="print the table of settings")
    args = p.parse_args(argv)
    logs.setup()
    handlers = {"up": cmd_up, "migrate": cmd_migrate, "ingest": cmd_ingest, "api": cmd_api,
                "simulate": cmd_simulate, "broker": cmd_broker, "settings": cmd_settings}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
