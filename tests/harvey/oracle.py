#!/usr/bin/env python3
"""Independent oracle for config/harvey.rules on the Harvey HCFCD fixture.

Produced the committed expected files with (from the repository root):

    python3 tests/harvey/oracle.py fixtures/harvey/hcfcd_harvey_5min_wide.csv \
        fixtures/harvey/gauges.csv --summary tests/harvey/expected_summary.json \
        > tests/harvey/expected_warnings.jsonl

Python 3 standard library only.  Written from the semantics (semantics.md, docs/language.md
and the job brief), not from forewarn's engine code.  Everything is recomputed naively at every
evaluation instant from the raw samples; depths are exact integers in micrometres
(1 in = 25 400 um exactly, 0.01 in = 254 um) and every threshold is converted to um exactly;
the peer-median test is done in exact rational arithmetic (fractions.Fraction).

Replay model:
  * Each CSV row is one batch: the readings of every gauge stamped with the row's end_time
    (local CDT = UTC-05:00, fixed offset).  A value outside the feed range is rejected
    (excluded from every window) and listed in the summary.  Then every gauge is evaluated
    once at that instant T (after all of the row's readings have been applied, so group
    functions see every gauge's reading at T).
  * Windows are (T - w, T]: sum(rain, 1h) at T holds the samples stamped T-55min .. T.
  * Rule state machines: see evaluate_* below.  Nothing is evaluated after the last row's time;
    warnings still active then are listed in the summary.

Output (stdout): one JSON object per transition, sorted by (time, rule, entity) as plain
strings: {"rule","entity","seq","kind","from","to","time"} with time in UTC ("...Z").

The constants below mirror config/harvey.rules: if one changes, change the other.
"""
import argparse
import csv
import json
import statistics
import sys
from bisect import bisect_right
from datetime import datetime, timedelta, timezone
from fractions import Fraction

# ---------------------------------------------------------------- constants of harvey.rules
UM_PER_IN = 25400          # micrometres per inch, exact
UM_PER_MM = 1000
MIN = 60                   # seconds
HOUR = 3600

# feed rain: depth in, range 0 .. 2, interval 5m, late 6h, stale 30m, offline 2h
FEED_RANGE_IN = (Fraction(0), Fraction(2))        # inclusive, inches per 5-minute sample
LOCAL_UTC_OFFSET = timedelta(hours=-5)             # CDT timestamps in the CSV

# rule rainstorm on rain levels cma: ... clear after 1h
RAINSTORM_LEVELS = ["blue", "yellow", "orange", "red"]        # low -> high
RAINSTORM_WHEN = {                                            # level: (window s, >= mm)
    "red": (3 * HOUR, 100),
    "orange": (3 * HOUR, 50),
    "yellow": (6 * HOUR, 50),
    "blue": (12 * HOUR, 50),
}
RAINSTORM_CLEAR_AFTER = 1 * HOUR

# rule flash_flood on rain levels prepare < evacuate: ... clear when sum(rain, 1h) < 2 mm for 2h
FLASH_LEVELS = ["prepare", "evacuate"]
FLASH_WHEN = {     # level: [(window s, gauges.csv column)], OR across the durations, >=
    "evacuate": [(1 * HOUR, "evac_1h"), (3 * HOUR, "evac_3h"), (6 * HOUR, "evac_6h"),
                 (24 * HOUR, "evac_24h")],
    "prepare": [(1 * HOUR, "prep_1h"), (3 * HOUR, "prep_3h"), (6 * HOUR, "prep_6h"),
                (24 * HOUR, "prep_24h")],
}
FLASH_CLEAR_WINDOW = 1 * HOUR
FLASH_CLEAR_BELOW_MM = 2          # sum(rain, 1h) < 2 mm
FLASH_CLEAR_FOR = 2 * HOUR

# rule suspect_gauge on rain: suspect when sum(rain,3h) < 0.05 * peer_median(sum(rain,3h), area)
#   and peer_median(...) >= 25 mm and peer_count(...) >= 3; for 30m
SUSPECT_WINDOW = 3 * HOUR
SUSPECT_FRACTION = Fraction(5, 100)
SUSPECT_MIN_MEDIAN_MM = 25
SUSPECT_MIN_PEERS = 3
SUSPECT_FOR = 30 * MIN

GROUP_COLUMN = "area"
KEY_COLUMN = "site"

WINDOWS = sorted({w for w, _ in RAINSTORM_WHEN.values()}
                 | {w for v in FLASH_WHEN.values() for w, _ in v}
                 | {FLASH_CLEAR_WINDOW, SUSPECT_WINDOW})


# ---------------------------------------------------------------- input
def parse_local(ts):
    """'2017-08-25 00:05:00' local CDT -> epoch seconds (int)."""
    dt = datetime.strptime(ts, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone(LOCAL_UTC_OFFSET))
    return int(dt.timestamp())


def iso_utc(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def inches_to_um(value):
    um = value * UM_PER_IN
    if um.denominator != 1:
        raise SystemExit("value %s in is not a whole number of micrometres" % value)
    return int(um)


def load_table(path):
    rows = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    table = {}
    for r in rows:
        if r[KEY_COLUMN] in table:
            raise SystemExit("duplicate key %s in %s" % (r[KEY_COLUMN], path))
        table[r[KEY_COLUMN]] = r
    return table


def mm_to_um(text_or_int):
    v = Fraction(str(text_or_int)) * UM_PER_MM
    if v.denominator != 1:
        raise SystemExit("threshold %s mm is not a whole number of micrometres" % text_or_int)
    return int(v)


# ---------------------------------------------------------------- state machines
class Emitter:
    def __init__(self):
        self.records = []
        self.seq = {}
        self.state = {}          # (rule, entity) -> (level, since)

    def emit(self, rule, entity, kind, frm, to, t):
        key = (rule, entity)
        self.seq[key] = self.seq.get(key, 0) + 1
        self.records.append({"rule": rule, "entity": entity, "seq": self.seq[key], "kind": kind,
                             "from": frm, "to": to, "time": iso_utc(t)})
        self.state[key] = (to, t)


def rank(levels, lv):
    return -1 if lv is None else levels.index(lv)


def candidate_of(levels, holds):
    """Highest level whose condition holds, or None."""
    best = None
    for lv in levels:
        if holds[lv]:
            best = lv
    return best


def evaluate_rainstorm(st, holds, t, em, entity):
    """st: {'level', 'exit_since'}.  No `for`; rule-wide `clear after 1h`.

    candidate > current: raise/escalate at once.  Otherwise the current level's exit holds
    when its `when` does not; once it has held at every evaluation for >= 1 h (timer started
    at the first evaluation where it held, reset when the level's `when` holds again or on any
    transition) the level steps down to the candidate (downgrade) or clears."""
    levels = RAINSTORM_LEVELS
    cur = st["level"]
    cand = candidate_of(levels, holds)
    if rank(levels, cand) > rank(levels, cur):
        em.emit("rainstorm", entity, "raise" if cur is None else "escalate", cur, cand, t)
        st["level"], st["exit_since"] = cand, None
        return
    if cur is None:
        return
    if holds[cur]:
        st["exit_since"] = None
        return
    if st["exit_since"] is None:
        st["exit_since"] = t
    if t - st["exit_since"] >= RAINSTORM_CLEAR_AFTER:
        em.emit("rainstorm", entity, "clear" if cand is None else "downgrade", cur, cand, t)
        st["level"], st["exit_since"] = cand, None


def evaluate_flash(st, holds, clear_when, t, em, entity):
    """st: {'level', 'clear_since'}.  No `for`, no exit clauses; `clear when ... for 2h`.

    The clear-when run is tracked at every evaluation regardless of the level.  candidate >
    current: raise/escalate.  At evacuate with evacuate's `when` false: downgrade to prepare
    (candidate prepare, or candidate none and clear-when not yet satisfied), or clear
    (candidate none and clear-when satisfied).  At prepare with prepare's `when` false: clear
    once clear-when has held for >= 2 h, else hold."""
    st["clear_since"] = (st["clear_since"] if st["clear_since"] is not None else t) \
        if clear_when else None
    clear_ok = clear_when and t - st["clear_since"] >= FLASH_CLEAR_FOR
    levels = FLASH_LEVELS
    cur = st["level"]
    cand = candidate_of(levels, holds)
    if rank(levels, cand) > rank(levels, cur):
        em.emit("flash_flood", entity, "raise" if cur is None else "escalate", cur, cand, t)
        st["level"] = cand
        return
    if cur is None or holds[cur]:
        return
    if cand is None and clear_ok:
        em.emit("flash_flood", entity, "clear", cur, None, t)
        st["level"] = None
    elif cur == "evacuate":
        em.emit("flash_flood", entity, "downgrade", cur, "prepare", t)
        st["level"] = "prepare"


def evaluate_suspect(st, cond, t, em, entity):
    """st: {'level', 'run_since'}.  Single level with `for 30m`: raise once the condition has
    held at every evaluation since S with T - S >= 30 min; clear as soon as it does not hold."""
    if cond:
        if st["run_since"] is None:
            st["run_since"] = t
    else:
        st["run_since"] = None
    if st["level"] is None:
        if cond and t - st["run_since"] >= SUSPECT_FOR:
            em.emit("suspect_gauge", entity, "raise", None, "suspect", t)
            st["level"] = "suspect"
    elif not cond:
        em.emit("suspect_gauge", entity, "clear", "suspect", None, t)
        st["level"] = None


# ---------------------------------------------------------------- replay
def run(wide_csv, gauges_csv):
    table = load_table(gauges_csv)
    reader = csv.reader(open(wide_csv, newline="", encoding="utf-8"))
    header = next(reader)
    if header[:2] != ["begin_time", "end_time"]:
        raise SystemExit("unexpected header %r" % header[:2])
    sites = header[2:]
    missing = [s for s in sites if s not in table]
    if missing:
        raise SystemExit("gauges missing from %s: %s" % (gauges_csv, missing))

    thr = {s: {col: mm_to_um(table[s][col]) for lv in FLASH_WHEN for _, col in FLASH_WHEN[lv]}
           for s in sites}
    rs_thr = {lv: (w, mm_to_um(mm)) for lv, (w, mm) in RAINSTORM_WHEN.items()}
    clear_below = mm_to_um(FLASH_CLEAR_BELOW_MM)
    min_median = mm_to_um(SUSPECT_MIN_MEDIAN_MM)
    groups = {}
    for s in sites:
        groups.setdefault(table[s][GROUP_COLUMN], []).append(s)
    peers = {s: [p for p in groups[table[s][GROUP_COLUMN]] if p != s] for s in sites}

    times = {s: [] for s in sites}       # accepted sample timestamps (epoch s), per gauge
    vals = {s: [] for s in sites}        # accepted sample depths (um)
    rejected = []
    em = Emitter()
    rs_state = {s: {"level": None, "exit_since": None} for s in sites}
    ff_state = {s: {"level": None, "clear_since": None} for s in sites}
    sg_state = {s: {"level": None, "run_since": None} for s in sites}
    diag = {"ties": [], "float_disagreements": 0, "rows": 0}
    last_t = None
    first_t = None

    def wsum(s, t, w):
        """Naive: sum of the samples stamped in (t - w, t]."""
        ts = times[s]
        lo = bisect_right(ts, t - w)
        hi = bisect_right(ts, t)
        return sum(vals[s][lo:hi])

    for row in reader:
        if len(row) != len(header):
            raise SystemExit("ragged row %r" % row[:2])
        t = parse_local(row[1])
        if parse_local(row[0]) != t - 5 * MIN:
            raise SystemExit("row %s is not a 5-minute interval" % row[:2])
        if last_t is not None and t <= last_t:
            raise SystemExit("rows not strictly increasing at %s" % row[1])
        if first_t is None:
            first_t = t
        last_t = t
        diag["rows"] += 1
        # 1. apply the batch
        for s, text in zip(sites, row[2:]):
            v = Fraction(text)
            if not (FEED_RANGE_IN[0] <= v <= FEED_RANGE_IN[1]):
                rejected.append({"entity": s, "time": iso_utc(t), "value_in": text,
                                 "reason": "out of range %s..%s in" % FEED_RANGE_IN})
                continue
            times[s].append(t)
            vals[s].append(inches_to_um(v))
        # 2. every window of every gauge, recomputed from the raw samples
        sums = {s: {w: wsum(s, t, w) for w in WINDOWS} for s in sites}

        # 3. evaluate every gauge at t
        for s in sites:
            sm = sums[s]

            def ge(x, y, what):
                if x == y:
                    diag["ties"].append((iso_utc(t), s, what, x))
                return x >= y

            # rainstorm
            holds = {lv: ge(sm[w], um, "rainstorm." + lv) for lv, (w, um) in rs_thr.items()}
            evaluate_rainstorm(rs_state[s], holds, t, em, s)

            # flash_flood
            holds = {lv: any([ge(sm[w], thr[s][col], "flash_flood.%s.%s" % (lv, col))
                              for w, col in FLASH_WHEN[lv]]) for lv in FLASH_LEVELS}
            clear_when = sm[FLASH_CLEAR_WINDOW] < clear_below
            evaluate_flash(ff_state[s], holds, clear_when, t, em, s)

            # suspect_gauge
            pv = [sums[p][SUSPECT_WINDOW] for p in peers[s]]
            if not pv:
                raise SystemExit("gauge %s has no peers: peer_median would have no value, "
                                 "which this oracle does not model" % s)
            med = Fraction(statistics.median_low(pv) + statistics.median_high(pv), 2)
            mine = sm[SUSPECT_WINDOW]
            c1 = mine < SUSPECT_FRACTION * med
            c1_float = mine / 1000.0 < 0.05 * (float(med) / 1000.0)
            if c1 != c1_float:
                diag["float_disagreements"] += 1
            if mine == SUSPECT_FRACTION * med and med >= min_median:
                diag["ties"].append((iso_utc(t), s, "suspect.fraction", mine))
            c2 = ge(med, min_median, "suspect.median")
            c3 = len(pv) >= SUSPECT_MIN_PEERS
            evaluate_suspect(sg_state[s], c1 and c2 and c3, t, em, s)

    records = sorted(em.records, key=lambda r: (r["time"], r["rule"], r["entity"]))
    return records, em, rejected, diag, first_t, last_t, sites


def summarize(records, em, rejected, first_t, last_t, sites):
    by_kind, entered, warned, max_level = {}, {}, {}, {}
    order = {"rainstorm": RAINSTORM_LEVELS, "flash_flood": FLASH_LEVELS,
             "suspect_gauge": ["suspect"]}
    top = {}
    for r in records:
        k = by_kind.setdefault(r["rule"], {"raise": 0, "escalate": 0, "downgrade": 0, "clear": 0})
        k[r["kind"]] += 1
        if r["to"] is not None:
            e = entered.setdefault(r["rule"], {lv: 0 for lv in order[r["rule"]]})
            e[r["to"]] += 1
            key = (r["rule"], r["entity"])
            if key not in top or order[r["rule"]].index(r["to"]) > order[r["rule"]].index(top[key]):
                top[key] = r["to"]
        if r["kind"] == "raise":
            warned.setdefault(r["rule"], set()).add(r["entity"])
    for (rule, _), lv in top.items():
        m = max_level.setdefault(rule, {l: 0 for l in order[rule]})
        m[lv] += 1
    active = sorted(({"rule": rule, "entity": ent, "level": lv, "since": iso_utc(since)}
                     for (rule, ent), (lv, since) in em.state.items() if lv is not None),
                    key=lambda a: (a["rule"], a["entity"]))
    return {
        "input": {"gauges": len(sites), "first_evaluation": iso_utc(first_t),
                  "last_evaluation": iso_utc(last_t)},
        "transitions": len(records),
        "transitions_by_rule_and_kind": {r: by_kind.get(r, {}) for r in order},
        "levels_entered_by_rule": {r: entered.get(r, {lv: 0 for lv in order[r]}) for r in order},
        "entities_raised_by_rule": {r: len(warned.get(r, ())) for r in order},
        "entities_by_highest_level": {r: max_level.get(r, {}) for r in order},
        "active_at_end": {"count": len(active), "warnings": active},
        "rejected_readings": {"count": len(rejected), "readings": rejected},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("wide_csv")
    ap.add_argument("gauges_csv")
    ap.add_argument("--summary", help="write the summary JSON here")
    a = ap.parse_args()
    records, em, rejected, diag, first_t, last_t, sites = run(a.wide_csv, a.gauges_csv)
    out = sys.stdout
    for r in records:
        out.write(json.dumps(r, separators=(",", ":")) + "\n")
    summary = summarize(records, em, rejected, first_t, last_t, sites)
    if a.summary:
        with open(a.summary, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    print("rows %d, transitions %d, rejected %d, exact ties %d, float/exact disagreements %d"
          % (diag["rows"], len(records), len(rejected), len(diag["ties"]),
             diag["float_disagreements"]), file=sys.stderr)
    for tie in diag["ties"][:20]:
        print("  tie: %s %s %s %d um" % tie, file=sys.stderr)


if __name__ == "__main__":
    main()
