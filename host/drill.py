"""`meterseal drill`: the signing path alone, offline, with tamper drills (no host, no devices).

1. Build the gateway image: every device module compiled by mpy-cross, and its software digest.
2. Run the gateway on the real MicroPython unix port: it creates its key at first boot and signs
   a chained batch of fuel-sale, weighing, tank, heartbeat and event records.
3. Verify everything on the host with `cryptography`: signatures over the received bytes, key id,
   record schema, the seq/prev chain, and the software digest.
4. Tamper drills: rewrite a sale, delete, replay and inject records; each must be caught.
"""

import argparse
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from meterseal.firmware import signer
from meterseal.hil import micropython
from meterseal.host import chain, verify
from meterseal.host.envelopes import EnvelopeStreamError, read_stream
from meterseal.protocol import cbor, cose, records

# The tamper drills need a few records of each kind; the upper bound keeps a run under minutes.
MIN_RECORDS = 10
MAX_RECORDS = 100000

GATEWAY_SCRIPT = Path(micropython.__file__).parent / "gateway_scripts" / "drill_gateway.py"


class DrillError(RuntimeError):
    pass


def _say(text=""):
    print(text, flush=True)


def _check(ok, text):
    _say(f"  [{'ok' if ok else 'FAILED'}] {text}")
    return ok


def run_gateway(workdir, count, use_table, image=None):
    """Build the image (unless given) and sign ``count`` records on MicroPython.

    Returns (envelopes, gateway summary, image facts)."""
    workdir = Path(workdir)
    image = image or workdir / "image"
    if not (image / "meterseal").is_dir():
        micropython.build_image(image)
    facts = micropython.image_facts(image)
    result = micropython.run(
        GATEWAY_SCRIPT,
        image,
        args=[workdir, count, facts["digest"].hex(), "table" if use_table else "no_table"],
        # Without the big table the gateway must live in a small board's heap.
        heapsize=None if use_table else "192K",
    )
    if result.returncode != 0:
        raise DrillError(f"the gateway failed on MicroPython: {micropython.last_line(result)}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    try:
        envelopes = read_stream((workdir / "records.bin").read_bytes())
    except EnvelopeStreamError as exc:
        raise DrillError(f"the gateway's output is damaged: {exc}")
    return envelopes, summary, facts


def verify_stream(envelopes, keyring):
    """Verdicts and chain findings for a gateway's envelopes, in order."""
    tracker = chain.ChainTracker()
    verdicts, findings = [], []
    for envelope in envelopes:
        verdict = verify.verify_record(envelope, keyring)
        verdicts.append(verdict)
        if verdict.outcome == verify.VERIFIED:
            r = verdict.record
            findings += tracker.feed(envelope, r["seq"], r["boot_epoch"], r["prev"])
    return verdicts, findings


def _tamper_drills(envelopes, keyring):
    """Each drill changes a copy of the stream the way a cheat would.

    Returns (name, what the host detected, what it must detect) per drill."""
    sale_index = next(
        i for i, e in enumerate(envelopes)
        if records.parse(cose.parse_sign1(e).payload)["kind"] == "fuel.sale"
    )
    sale = cose.parse_sign1(envelopes[sale_index])
    plain = records.parse(sale.payload)
    plain["body"]["volume_ml"] += 1000
    rewritten = cbor.dumps(
        cbor.Tag(cose.TAG_SIGN1, [sale.protected, {}, records.encode(plain), sale.signature])
    )

    def detected(stream):
        verdicts, findings = verify_stream(stream, keyring)
        return {v.outcome for v in verdicts} - {verify.VERIFIED} | {f.kind for f in findings}

    # A forged or foreign record is rejected, so the chain also shows the hole it leaves.
    drills = [
        ("back office adds 1 L to a signed sale", envelopes[:sale_index] + [rewritten]
         + envelopes[sale_index + 1:], {verify.BAD_SIGNATURE, chain.GAP}),
        ("a record is deleted", envelopes[:5] + envelopes[6:], {chain.GAP}),
        ("a record is sent twice", envelopes[:8] + [envelopes[3]] + envelopes[8:], {chain.REPLAY}),
        ("a record signed by another key is slipped in", envelopes[:2] + [_foreign_record(plain)]
         + envelopes[2:], {verify.UNKNOWN_KEY}),
    ]
    return [(name, detected(stream), expected) for name, stream, expected in drills]


def _foreign_record(plain):
    impostor = signer.SoftwareSigner(signer.generate_secret())
    return cose.sign1(records.encode(plain), impostor, cose.kid_for(impostor.public_key()))


def run(args):
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="meterseal-drill-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "records.bin").unlink(missing_ok=True)
    try:
        _say(f"meterseal drill (work directory {workdir})")
        _say()
        _say("1. Gateway image (mpy-cross)")
        _say(f"2. Gateway on the MicroPython unix port: signing {args.records} records "
             f"({'with the fixed-base table' if args.table else 'no table, 192 KB heap'})")
        envelopes, summary, facts = run_gateway(workdir, args.records, args.table)
        _say(f"   image: {facts['files']} modules, {facts['bytes']} bytes of .mpy, "
             f"software digest {facts['digest'].hex()[:16]}...")
        _say(f"   gateway key created at first boot: {workdir / 'gateway.key'}")
        _say(f"   signed {summary['records']} records, sign p50 {summary['sign_p50_ms']:.2f} ms "
             f"(max {summary['sign_max_ms']:.2f} ms) on MicroPython")
        _say()
        _say("3. Host verification (cryptography, over the exact received bytes)")
        public_key = bytes.fromhex(summary["public_key"])
        kid = cose.kid_for(public_key)
        keyring = {kid: verify.load_public_key(public_key)}
        verdicts, findings = verify_stream(envelopes, keyring)
        verified = [v for v in verdicts if v.outcome == verify.VERIFIED]
        seqs = [v.record["seq"] for v in verified]
        ok = _check(len(envelopes) == args.records, f"{len(envelopes)} envelopes received")
        ok &= _check(len(verified) == len(envelopes),
                     f"{len(verified)}/{len(envelopes)} ES256 signatures verify and payloads "
                     f"conform to record schema v{records.SCHEMA_VERSION}")
        ok &= _check(all(v.kid == kid for v in verdicts),
                     f"every record names kid {kid.hex()[:16]}... = SHA-256(gateway public key)")
        ok &= _check(not findings and seqs == list(range(len(envelopes))),
                     f"seq 0..{len(envelopes) - 1} contiguous; each prev = SHA-256 of the "
                     "previous envelope; no gap, fork, replay or rewind")
        ok &= _check(all(v.record["software_digest"] == facts["digest"] for v in verified),
                     "software digest in every record matches the image built here")
        kinds = Counter(v.record["kind"] for v in verified)
        _say("       kinds: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        _say()
        _say("4. Tamper drills (each on a copy of the stream)")
        for name, found, expected in _tamper_drills(envelopes, keyring):
            shown = ", ".join(sorted(found)) or "nothing"
            ok &= _check(found == expected, f"{name}: host reports {shown}")
        _say()
        _say("All checks passed." if ok else "Some checks FAILED.")
        return 0 if ok else 1
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _record_count(text):
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    if not MIN_RECORDS <= count <= MAX_RECORDS:
        raise argparse.ArgumentTypeError(f"must be between {MIN_RECORDS} and {MAX_RECORDS}")
    return count


def add_parser(sub):
    parser = sub.add_parser("drill", help="sign records on the MicroPython gateway, verify them "
                                          "offline and run tamper drills on copies")
    parser.add_argument("--records", type=_record_count, default=200,
                        help=f"how many records to sign, {MIN_RECORDS}..{MAX_RECORDS} (default 200)")
    parser.add_argument("--no-table", dest="table", action="store_false",
                        help="sign without the fixed-base table, under a 192 KB heap")
    parser.add_argument("--workdir", help="keep the key, image and records here (default: a temporary directory)")
    parser.set_defaults(run=run)
