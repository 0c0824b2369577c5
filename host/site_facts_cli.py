"""`meterseal workorder` and `meterseal price`: what the detectors check configuration events
and sale prices against, entered from the command line (the API's /sites/{site}/work-orders
and /sites/{site}/prices do the same; docs/operations.md, "Work orders and prices").

    meterseal workorder add --site SITE-1 --id WO-17 --work calibration,seal_open \\
        --from 2026-03-02T09:00+08:00 --to 2026-03-02T12:00+08:00 [--gateway GW] [--device 80]
    meterseal workorder list --site SITE-1
    meterseal price set --site SITE-1 --grade 92 --price 7850000 --from 2026-03-01
    meterseal price list --site SITE-1
"""

import argparse
import getpass

from meterseal.fraud_rules.facts import AUTHORISED_WORK
from meterseal.fraud_rules.finding import utc_text
from meterseal.host import cli_store
from meterseal.host.backtest import parse_time


def _operator(args):
    return args.entered_by or getpass.getuser()


def _add_work_order(args):
    work = [kind.strip() for kind in args.work.split(",") if kind.strip()]
    with cli_store.open_cli_store(args.db, create=False) as store:
        order = store.detection.add_work_order(
            args.id, args.site, work, parse_time(args.start, "--from"),
            parse_time(args.end, "--to"), entered_by=_operator(args), gateway_id=args.gateway,
            device_ref=args.device, technician=args.technician, reference=args.reference)
    print(f"work order {order.work_order_id} recorded for site {order.site_id}")
    return 0


def _list_work_orders(args):
    with cli_store.open_cli_store(args.db, create=False) as store:
        orders = store.detection.work_orders(args.site)
    for order in orders:
        print("\t".join([order.work_order_id, order.gateway_id or "*", order.device_ref or "*",
                         ",".join(order.work), utc_text(order.valid_from_ms),
                         utc_text(order.valid_to_ms), order.technician, order.reference]))
    return 0


def _set_price(args):
    with cli_store.open_cli_store(args.db, create=False) as store:
        price = store.detection.set_price(args.site, args.grade, args.price,
                                          parse_time(args.start, "--from"),
                                          entered_by=_operator(args))
    print(f"site {price.site_id} grade {price.grade}: {price.price_minor_per_kl} per kL from "
          f"{utc_text(price.valid_from_ms)}")
    return 0


def _list_prices(args):
    with cli_store.open_cli_store(args.db, create=False) as store:
        prices = store.detection.prices(args.site)
    for price in prices:
        print(f"{price.grade}\t{price.price_minor_per_kl}\t{utc_text(price.valid_from_ms)}\t"
              f"{price.entered_by}")
    return 0


def _grade(text):
    value = int(text)
    if not 1 <= value <= 99:
        raise argparse.ArgumentTypeError(f"grade {value} is not in 1..99")
    return value


def add_parser(sub):
    orders = sub.add_parser("workorder", help="authorised work orders the detectors accept")
    order_actions = orders.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = order_actions.add_parser("add", help="record an authorised work order")
    add.add_argument("--id", required=True, help="the work order's id")
    add.add_argument("--work", required=True,
                     help="comma-separated, of: " + ", ".join(AUTHORISED_WORK))
    add.add_argument("--from", dest="start", required=True, help="ISO 8601, UTC unless zoned")
    add.add_argument("--to", dest="end", required=True, help="ISO 8601, included")
    add.add_argument("--gateway", help="only this gateway's devices (default: the whole site)")
    add.add_argument("--device", help='only this device, e.g. "80" or "80/1"')
    add.add_argument("--technician", default="")
    add.add_argument("--reference", default="", help="the authority's own number for it")
    add.set_defaults(run=_add_work_order)
    listing = order_actions.add_parser("list", help="a site's work orders")
    listing.set_defaults(run=_list_work_orders)

    prices = sub.add_parser("price", help="prices a site announced, for the price detectors")
    price_actions = prices.add_subparsers(dest="action", metavar="ACTION", required=True)
    set_ = price_actions.add_parser("set", help="announce a grade's price from a time on")
    set_.add_argument("--grade", required=True, type=_grade)
    set_.add_argument("--price", required=True, type=int, help="minor units per kL")
    set_.add_argument("--from", dest="start", required=True, help="ISO 8601, UTC unless zoned")
    set_.set_defaults(run=_set_price)
    price_list = price_actions.add_parser("list", help="a site's announced prices")
    price_list.set_defaults(run=_list_prices)

    for parser in (add, listing, set_, price_list):
        cli_store.add_db_option(parser)
        parser.add_argument("--site", required=True, help="the site's id")
    for parser in (add, set_):
        parser.add_argument("--entered-by", help="who enters it (default: the login name)")
