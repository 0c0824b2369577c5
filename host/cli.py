"""The ``meterseal`` command."""

import argparse
import sys


def build_parser():
    parser = argparse.ArgumentParser(
        prog="meterseal",
        description="Signed, gap-proof metering records for fuel dispensers and price scales.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    return parser, sub


def main(argv=None):
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
