"""`meterseal evaluate`: score the detectors on a labelled fleet (docs/detectors.md,
"Evaluation").

    meterseal evaluate --scenario hil_tests/scenarios/eval_small.toml --out ./meterseal-eval

Writes report.json, report.md (the table), alarms.json and the plots delay.png and recall.png
(matplotlib: the optional extra meterseal[plots]) to --out, prints the table, and shows
progress on stderr.
"""

import sys

from meterseal.fraud_rules import evaluate
from meterseal.fraud_rules.params import ParamsError
from meterseal.hil.record_fleet import FleetScenarioError, load_scenario
from meterseal.hil.scenario import ScenarioError

DEFAULT_OUT = "meterseal-eval"


class EvaluateCliError(ScenarioError):
    """A user error: the meterseal command prints it as one line (it already does so for every
    ScenarioError)."""


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{text!r} is not a positive whole number")
    return value


def run(args):
    try:
        scenario = load_scenario(args.scenario)
        # Plots last, but fail before a long run when matplotlib is missing.
        evaluate.require_plots()
        report, alarms = evaluate.run(scenario, params_file=args.params, seed=args.seed,
                                      days=args.days, progress=sys.stderr)
        evaluate.write_report(report, alarms, args.out)
    except (FleetScenarioError, ParamsError, evaluate.EvaluateError) as exc:
        raise EvaluateCliError(str(exc)) from None
    print(evaluate.table(report))
    print(f"report written to {args.out}/ (report.json, report.md, alarms.json, delay.png, "
          "recall.png)")
    return 0


def add_parser(commands):
    parser = commands.add_parser(
        "evaluate", help="score the fraud detectors on a simulated, labelled fleet",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", required=True, help="the fleet description (TOML)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"directory for the report and plots (default ./{DEFAULT_OUT})")
    parser.add_argument("--params", help="detector parameters overriding the defaults (TOML)")
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument("--days", type=_positive, help="override the scenario's days")
    parser.set_defaults(run=run)
