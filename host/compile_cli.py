"""`meterseal compile-detectors`: builds the compiled detectors (fraud_rules/native.py).

    meterseal compile-detectors                 # fails with the reason when it cannot
    meterseal compile-detectors --if-possible   # says why and exits 0: the Python ones run
    meterseal compile-detectors --status        # which a host would run, and why; exit 1 unless
                                                # the build is fresh (for a monitoring check)

`make venv` runs it with --if-possible, and again whenever a detector's source changes.
"""

import sys

from meterseal.fraud_rules import native
from meterseal.fraud_rules.native_build import CompileError, build


def _run(args):
    if args.status:
        state, why = native.build_state()
        print(f"{native.compiled_dir()}: {state} ({why})")
        return 0 if state == "fresh" else 1
    print(f"meterseal: compiling {len(native.MODULES)} detector modules with mypyc "
          "(15-60 s) ...", flush=True)
    try:
        seconds = build()
    except CompileError as exc:
        if not args.if_possible:
            raise
        print(f"meterseal: the detectors stay pure Python (slower, same findings): {exc}",
              file=sys.stderr)
        return 0
    print(f"meterseal: compiled in {seconds:.0f} s into {native.compiled_dir()}")
    return 0


def add_parser(sub):
    parser = sub.add_parser(
        "compile-detectors",
        help="compile the detectors with mypyc (about a fifth less CPU per record)",
        description="Compiles the detector modules with mypyc into fraud_rules/_compiled (or "
                    "$METERSEAL_COMPILED_DIR). A host loads them only while they match the "
                    "source they were built from.")
    parser.add_argument("--if-possible", action="store_true",
                        help="when mypyc or a C compiler is missing, say so and exit 0")
    parser.add_argument("--status", action="store_true",
                        help="only report whether a fresh build exists (exit status 1 if not)")
    parser.set_defaults(run=_run)
