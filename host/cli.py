"""The ``meterseal`` command. Expected failures print one clear line; no traceback reaches a user."""

import argparse
import subprocess
import sys

from meterseal.fraud_rules import ParamsError
from meterseal.hil import commands as hil_commands
from meterseal.hil.fleet import FleetError
from meterseal.hil.micropython import MicroPythonError
from meterseal.hil.scenario import ScenarioError
from meterseal.hil.site import SiteError
from meterseal.fraud_rules.native_build import CompileError
from meterseal.host import (backtest, bench, compile_cli, demo, drill, evaluate_cli, gateway_cli,
                            records_cli, registry_cli, serve, site_facts_cli, token_cli)
from meterseal.protocol.errors import ProtocolError

_USER_ERRORS = (
    backtest.BacktestError,
    CompileError,
    demo.DemoError,
    drill.DrillError,
    FleetError,
    gateway_cli.GatewayError,
    registry_cli.RegistryError,
    serve.ServeError,
    MicroPythonError,
    ProtocolError,
    ScenarioError,
    SiteError,
    OSError,
    ParamsError,
    subprocess.TimeoutExpired,
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="meterseal",
        description="Signed, gap-proof metering records for fuel dispensers and price scales.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    demo.add_parser(sub)
    drill.add_parser(sub)
    bench.add_parser(sub)
    hil_commands.add_parsers(sub)
    gateway_cli.add_parser(sub)
    registry_cli.add_parser(sub)
    records_cli.add_parsers(sub)
    serve.add_parser(sub)
    token_cli.add_parser(sub)
    site_facts_cli.add_parser(sub)
    backtest.add_parser(sub)
    evaluate_cli.add_parser(sub)
    compile_cli.add_parser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except _USER_ERRORS as exc:
        print(f"meterseal {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
