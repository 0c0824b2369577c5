"""What the verifier's findings become as alerts: a rule id, a severity and score, and an
explanation in English and Simplified Chinese that says what was expected, what was observed
and by how much (docs/alerts.md, "Verifier alert rules", gives the reasons for each severity).

Pure: the ingest (ingest.py) passes in what one committed batch produced and a lookup from a
seq of the gateway's chain to its stored record id, and raises the Sightings this returns.
A replay raises nothing: a gateway resends after a lost ACK.
"""

from dataclasses import dataclass
from datetime import datetime, timezone

from meterseal.host import chain, verify
from meterseal.host.ingest_check import claimed_seq
from meterseal.host.storage import FORK, QUARANTINED
from meterseal.protocol import cose

# Rule ids, severities and scores; docs/alerts.md gives the reasoning. A gap's score grows with
# the number of records missing (_gap_score).
RULES = {
    "chain.fork": ("critical", 1.0),
    "verify.bad_signature": ("critical", 0.95),
    "chain.chain_break": ("high", 0.9),
    "chain.rewind": ("high", 0.9),
    "verify.revoked_key": ("high", 0.9),
    "verify.sender_mismatch": ("high", 0.8),
    "verify.unknown_key": ("high", 0.8),
    "verify.unsupported_alg": ("high", 0.7),
    "verify.invalid_rotated_key": ("high", 0.7),
    "verify.seq_out_of_range": ("high", 0.7),
    "registry.unexpected_software": ("high", 0.8),
    "chain.gap": ("medium", None),
    "chain.clock_anomaly": ("medium", 0.5),
    "verify.malformed": ("medium", 0.4),
}
_GAP_SCORE_MIN, _GAP_SCORE_MAX, _GAP_SCORE_FULL_AT = 0.4, 0.8, 100
_SHOWN_ITEMS = 10  # seqs or kids named in one explanation; the parameters hold them all


@dataclass(frozen=True)
class Sighting:
    rule: str
    severity: str
    score: float
    explanation_en: str
    explanation_zh: str
    parameters: dict
    evidence_record_ids: tuple


def _sighting(rule, en, zh, parameters, evidence, score=None):
    severity, fixed_score = RULES[rule]
    return Sighting(rule, severity, fixed_score if score is None else score, en, zh, parameters,
                    tuple(sorted({record_id for record_id in evidence if record_id is not None})))


def _gap_score(missing):
    share = min(missing, _GAP_SCORE_FULL_AT) / _GAP_SCORE_FULL_AT
    return round(_GAP_SCORE_MIN + (_GAP_SCORE_MAX - _GAP_SCORE_MIN) * share, 3)


def _utc(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] \
        + " UTC"


def _listed(values):
    shown = ", ".join(str(value) for value in values[:_SHOWN_ITEMS])
    return shown + (f", ... ({len(values)} in all)" if len(values) > _SHOWN_ITEMS else "")


def _hex(digest):
    return digest[:16] + "..."


# --- chain findings -----------------------------------------------------------------------------


def _gap(finding, record_id_at, config):
    facts = finding.detail
    first, last = finding.first_seq, finding.last_seq
    missing = last - first + 1
    expected, observed = facts["expected_seq"], facts["observed_seq"]
    before_en = f"after {expected - 1}" if expected else "as the gateway's first record"
    before_zh = f"在序号{expected - 1}之后" if expected else "作为网关的第一条记录"
    grace_en = f"{config.gap_grace_s:g} s or {config.gap_grace_records} further records"
    grace_zh = f"{config.gap_grace_s:g}秒或{config.gap_grace_records}条后续记录"
    en = (f"Expected seq {expected} {before_en}, received {observed}: "
          f"{observed - expected} records missing. Still missing after the grace period "
          f"({grace_en}): seq {first}..{last}, {missing} records. Records were withheld or "
          "lost; the gateway keeps unacknowledged records, so they should have arrived.")
    zh = (f"应{before_zh}收到序号{expected}，实际收到{observed}：缺少{observed - expected}条记录。"
          f"宽限期（{grace_zh}）结束后仍缺少序号{first}至{last}，共{missing}条。"
          "记录被扣留或丢失；网关会保留未确认的记录，这些记录本应已经到达。")
    parameters = dict(facts, first_missing_seq=first, last_missing_seq=last,
                      missing_records=missing, gap_grace_s=config.gap_grace_s,
                      gap_grace_records=config.gap_grace_records)
    return _sighting("chain.gap", en, zh, parameters,
                     [record_id_at(first - 1) if first else None, record_id_at(last + 1),
                      record_id_at(observed)], _gap_score(missing))


def _chain_break(finding, record_id_at, config):
    facts, seq = finding.detail, finding.first_seq
    expected, observed = facts["expected_prev"], facts["observed_prev"]
    if seq:
        en = (f"Expected seq {seq} to name as prev the SHA-256 of seq {seq - 1} as stored, "
              f"{_hex(expected)}; it names {_hex(observed)}. The chain is broken between seq "
              f"{seq - 1} and {seq}: records were removed, inserted or rewritten.")
        zh = (f"序号{seq}的prev应为已存储的序号{seq - 1}的SHA-256值{_hex(expected)}，实际为"
              f"{_hex(observed)}。序号{seq - 1}与{seq}之间的链条断裂：记录被删除、插入或改写。")
    else:
        en = (f"Expected seq 0, the first record, to name as prev all zeros; it names "
              f"{_hex(observed)}: the chain does not start where it should.")
        zh = f"第一条记录（序号0）的prev应为全零，实际为{_hex(observed)}：链条的起点不正确。"
    return _sighting("chain.chain_break", en, zh, dict(facts),
                     [record_id_at(seq - 1) if seq else None, record_id_at(seq)])


def _rewind(finding, record_id_at, config):
    facts, seq = finding.detail, finding.first_seq
    was, now = facts["previous_boot_epoch"], facts["observed_boot_epoch"]
    if "highest_seq" in facts:
        highest = facts["highest_seq"]
        en = (f"Expected a record from the later boot epoch {now} to continue after seq "
              f"{highest}; it carries seq {seq}, {highest - seq} lower, so the gateway's counter "
              "was restored to an older state.")
        zh = (f"来自较新启动周期{now}的记录应接在序号{highest}之后，实际序号为{seq}，"
              f"低了{highest - seq}：网关计数器被恢复到旧状态。")
        evidence = [record_id_at(highest), record_id_at(seq)]
    else:
        en = (f"Expected the boot epoch never to go back; at seq {seq} it went from {was} to "
              f"{now}, back by {was - now}: the gateway's state was restored or replaced.")
        zh = (f"启动周期不应倒退；在序号{seq}处从{was}变为{now}，倒退了{was - now}："
              "网关状态被恢复或替换。")
        evidence = [record_id_at(seq - 1) if seq else None, record_id_at(seq)]
    return _sighting("chain.rewind", en, zh, dict(facts), evidence)


def _clock_anomaly(finding, record_id_at, config):
    facts, seq = finding.detail, finding.first_seq
    previous = facts["previous_seq"]
    wall_delta_ms = facts["observed_wall_time_ms"] - facts["previous_wall_time_ms"]
    opsec_delta_ms = facts["opsec_advance_s"] * 1000
    tolerance_ms = facts["tolerance_ms"]
    if wall_delta_ms < -tolerance_ms:
        en = (f"Expected the wall time not to go back without a time_set event; from seq "
              f"{previous} to seq {seq} it went back {-wall_delta_ms} ms (tolerance "
              f"{tolerance_ms} ms). Records after it may carry false times.")
        zh = (f"没有time_set事件时，时钟不应倒退；从序号{previous}到序号{seq}倒退了"
              f"{-wall_delta_ms}毫秒（容差{tolerance_ms}毫秒）。其后记录的时间可能不实。")
    else:
        off_ms = abs(wall_delta_ms - opsec_delta_ms)
        en = (f"Expected the wall time to advance as opsec did, {opsec_delta_ms} ms from seq "
              f"{previous} to seq {seq}; it advanced {wall_delta_ms} ms, off by {off_ms} ms "
              f"(tolerance {tolerance_ms} ms), without a time_set event.")
        zh = (f"时钟应与opsec同步前进，从序号{previous}到序号{seq}应前进{opsec_delta_ms}毫秒；"
              f"实际前进{wall_delta_ms}毫秒，相差{off_ms}毫秒（容差{tolerance_ms}毫秒），"
              "期间没有time_set事件。")
    return _sighting("chain.clock_anomaly", en, zh, dict(facts),
                     [record_id_at(previous), record_id_at(seq)])


_FINDINGS = {chain.GAP: _gap, chain.CHAIN_BREAK: _chain_break, chain.REWIND: _rewind,
             chain.CLOCK_ANOMALY: _clock_anomaly}


def finding_sightings(findings, record_id_at, config):
    """The sightings of newly recorded chain findings (store NewFindings; replays raise none).
    ``record_id_at(seq)`` is the stored record id of the gateway's chain at ``seq``, or None."""
    return [_FINDINGS[f.kind](f, record_id_at, config) for f in findings if f.kind in _FINDINGS]


# --- what the store kept aside ------------------------------------------------------------------


def _fork(items, record_id_at):
    seqs = [verdict.record["seq"] for _, verdict, _ in items]
    evidence = [record_id for _, _, record_id in items] + [record_id_at(seq) for seq in seqs]
    en = (f"Expected one record per seq; received a second, different record for seq "
          f"{_listed(seqs)}, each validly signed by the gateway's key ({len(seqs)} in this "
          "batch). Only a cloned key or restored gateway state can do that; both are kept.")
    zh = (f"每个序号应只有一条记录；序号{_listed(seqs)}收到了第二条内容不同的记录，"
          f"均由网关密钥有效签名（本批共{len(seqs)}条）。只有密钥被复制或网关状态被恢复才会如此；"
          "两条记录均已保留。")
    return _sighting("chain.fork", en, zh, {"seqs": seqs}, evidence)


def _claimed(items):
    seqs = [claimed_seq(envelope) for envelope, _, _ in items]
    seqs = [seq for seq in seqs if seq is not None]
    return (f"claimed seq {_listed(seqs)}" if seqs else "no readable seq",
            f"声称序号{_listed(seqs)}" if seqs else "无法读取序号", seqs)


def _quarantine(rule, gateway_id, items, keyring):
    count = len(items)
    claimed_en, claimed_zh, seqs = _claimed(items)
    kids = sorted({verdict.kid.hex() for _, verdict, _ in items if verdict.kid})
    parameters = {"records": count, "claimed_seqs": seqs, "kids": kids}
    if rule == "verify.bad_signature":
        en = (f"Expected every record to carry a valid ES256 signature by gateway {gateway_id}'s"
              f" key; {count} record(s) ({claimed_en}) do not verify under key "
              f"{_listed([_hex(k) for k in kids])}: their bytes were altered after signing, or "
              "forged.")
        zh = (f"每条记录都应带有网关{gateway_id}密钥的有效ES256签名；{count}条记录（{claimed_zh}）"
              f"在密钥{_listed([_hex(k) for k in kids])}下验证失败：签名后被改动，或系伪造。")
    elif rule == "verify.unknown_key":
        en = (f"Expected records signed by a key registered for gateway {gateway_id}; {count} "
              f"record(s) ({claimed_en}) name key {_listed([_hex(k) for k in kids])}, which the "
              "registry does not hold for it: another device, or an unregistered key.")
        zh = (f"记录应由网关{gateway_id}已登记的密钥签名；{count}条记录（{claimed_zh}）使用密钥"
              f"{_listed([_hex(k) for k in kids])}，登记簿中该网关没有此密钥：可能是其他设备或未登记的密钥。")
    elif rule == "verify.revoked_key":
        revoked = {k: keyring.revoked_at_ms(bytes.fromhex(k)) for k in kids}
        first = min(revoked.values())
        parameters["revoked_at_ms"] = revoked
        en = (f"Expected no record signed with a revoked key to arrive or be dated at or after "
              f"its revocation ({_utc(first)}); {count} record(s) ({claimed_en}) signed with "
              f"key {_listed([_hex(k) for k in kids])} did. Whoever holds that key can backdate.")
        zh = (f"已吊销的密钥在吊销时间（{_utc(first)}）及之后签名的记录不应出现；"
              f"{count}条记录（{claimed_zh}）由密钥{_listed([_hex(k) for k in kids])}签名。"
              "持有该密钥者可以倒填时间。")
    elif rule == "verify.unsupported_alg":
        algs = sorted({cose.parse_sign1(envelope).alg for envelope, _, _ in items})
        parameters["algs"] = algs
        en = (f"Expected algorithm ES256 ({cose.ALG_ES256}); {count} record(s) ({claimed_en}) "
              f"name algorithm {_listed(algs)}, which this gateway's software never uses.")
        zh = (f"签名算法应为ES256（{cose.ALG_ES256}）；{count}条记录（{claimed_zh}）使用算法"
              f"{_listed(algs)}，该网关的软件从不使用此算法。")
    elif rule == "verify.malformed":
        sizes = [len(envelope) for envelope, _, _ in items]
        parameters.update(sizes_bytes=sizes, first_problem=items[0][1].detail)
        en = (f"Expected COSE_Sign1 envelopes whose signed payload follows the record schema; "
              f"{count} item(s) of {_listed(sizes)} bytes are not ({items[0][1].detail}): "
              "a software fault, a damaged journal or crafted input.")
        zh = (f"应为COSE_Sign1信封且签名内容符合记录格式；{count}条数据（{_listed(sizes)}字节）"
              f"不符合（{items[0][1].detail}）：软件故障、日志损坏或人为构造的输入。")
    elif rule == "verify.sender_mismatch":
        named = sorted({verdict.record["gateway_id"] for _, verdict, _ in items})
        parameters["named_gateway_ids"] = named
        en = (f"Expected gateway {gateway_id} to send its own records; {count} record(s) "
              f"({claimed_en}) signed with its key name gateway {_listed(named)}: a copied "
              "configuration or key.")
        zh = (f"网关{gateway_id}应只发送自己的记录；{count}条由其密钥签名的记录（{claimed_zh}）"
              f"却标明网关{_listed(named)}：配置或密钥被复制。")
    else:  # verify.seq_out_of_range
        en = (f"Expected seq at most {2**63 - 2}; {count} record(s) signed with the gateway's "
              f"key claim seq {_listed(seqs)}, which no honest counter reaches.")
        zh = (f"序号应不超过{2**63 - 2}；{count}条由网关密钥签名的记录声称序号{_listed(seqs)}，"
              "正常计数器不可能达到。")
    return _sighting(rule, en, zh, parameters, [record_id for _, _, record_id in items])


def _quarantine_rule(gateway_id, verdict):
    if verdict.outcome not in verify.ACCEPTED:
        return "verify." + verdict.outcome.lower()
    if verdict.record["gateway_id"] != gateway_id:
        return "verify.sender_mismatch"
    return "verify.seq_out_of_range"


def batch_sightings(gateway_id, items, results, keyring, record_id_at):
    """The sightings of one stored batch's forks and quarantined records, one per rule.
    ``items`` are its (envelope, verdict) pairs and ``results`` the store's IngestResults."""
    forks, quarantined = [], {}
    for (envelope, verdict), result in zip(items, results):
        entry = (envelope, verdict, result.record_id)
        if result.outcome == FORK:
            forks.append(entry)
        elif result.outcome == QUARANTINED:
            quarantined.setdefault(_quarantine_rule(gateway_id, verdict), []).append(entry)
    sightings = [_fork(forks, record_id_at)] if forks else []
    sightings += [_quarantine(rule, gateway_id, entries, keyring)
                  for rule, entries in sorted(quarantined.items())]
    return sightings


# --- what the registry was not given -------------------------------------------------------------


def refused_rotation_sightings(gateway_id, refused, record_id_at):
    """The sighting of a stored batch's verified key_rotated records whose new key is not a
    P-256 public key (ingest_check.RefusedRotation): kept, but the key is not registered."""
    if not refused:
        return []
    seqs = [rotation.seq for rotation in refused]
    announced = [rotation.public_key.hex() for rotation in refused]
    kids = sorted({rotation.signed_by_kid.hex() for rotation in refused})
    problem = refused[0].problem
    en = (f"Expected a key_rotated record to announce gateway {gateway_id}'s new P-256 public "
          f"key; {len(refused)} record(s) (seq {_listed(seqs)}), validly signed with its key "
          f"{_listed([_hex(k) for k in kids])}, announce {_listed([_hex(k) for k in announced])}"
          f": {problem}. The gateway's software derives the key from its secret, so a fault or "
          "other software made them. They are kept; the key is not registered, so records "
          "signed with it will be quarantined as signed by an unknown key.")
    zh = (f"key_rotated记录应公布网关{gateway_id}新的P-256公钥；{len(refused)}条记录（序号"
          f"{_listed(seqs)}）由其密钥{_listed([_hex(k) for k in kids])}有效签名，但公布的"
          f"{_listed([_hex(k) for k in announced])}不是P-256公钥（{problem}）。网关软件由其私钥推导"
          "公钥，因此这些记录出自故障或其他软件。记录已保留；该密钥未登记，用它签名的记录将作为未知密钥"
          "签名的记录隔离。")
    parameters = {"seqs": seqs, "announced_public_keys": announced, "kids": kids,
                  "first_problem": problem}
    return [_sighting("verify.invalid_rotated_key", en, zh, parameters,
                      [record_id_at(seq) for seq in seqs])]


def software_sightings(gateway_id, registered, unexpected, record_id_at):
    """The sighting of a stored batch's records that say software other than the gateway's
    registered software id signed them (ingest_check.BatchCheck.unexpected_software)."""
    if not unexpected:
        return []
    seqs = [seq for seq, _ in unexpected]
    reported = sorted({software for _, software in unexpected})
    en = (f"Expected gateway {gateway_id} to run the software registered for it, {registered}; "
          f"{len(seqs)} record(s) (seq {_listed(seqs)}) say {_listed(reported)} signed them. "
          "Software nobody registered can sign anything it likes: an unauthorised update, or "
          "the registry was not told of an authorised one (meterseal registry set-software).")
    zh = (f"网关{gateway_id}应运行为其登记的软件{registered}；{len(seqs)}条记录（序号{_listed(seqs)}）"
          f"表明由{_listed(reported)}签名。未经登记的软件可以签署任何内容：可能是未经授权的升级，"
          "或授权升级后未更新登记（meterseal registry set-software）。")
    parameters = {"seqs": seqs, "registered_software_id": registered,
                  "reported_software_ids": reported}
    return [_sighting("registry.unexpected_software", en, zh, parameters,
                      [record_id_at(seq) for seq in seqs])]
