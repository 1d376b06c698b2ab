#!/usr/bin/env python3
"""Lint the data-driven acceptance cases (format only; it computes nothing).

Checks every tests/cases/<name>/ directory against docs/cases.md: case.toml keys and values,
the files it names, input line syntax, expected.txt line syntax, that every rule and level
named in expected.txt is declared in rules.rules and every feed in [feeds] is declared.
Usage: python3 tests/cases/check_cases.py   (exit status 1 on any problem)
"""
import fnmatch
import json
import re
import sys
import tomllib
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = {"description", "source", "clock", "watermark-delay", "zone", "date", "future-skew",
        "inputs", "status", "feeds", "counters"}
REQUIRED = {"description", "source", "clock", "watermark-delay", "zone", "date", "inputs", "feeds"}
COUNTERS = {"accepted", "late", "duplicate", "replaced", "ignored", "added", "coerced", "rejected",
            "not_finite", "out_of_range", "not_numeric", "strict_string", "too_late",
            "future_dated", "stale_dated", "malformed", "missing_field", "no_offset",
            "unknown_entity", "unknown_feed", "bad_timestamp", "too_large", "read"}
DUR = re.compile(r"^(\d+(ms|s|m|h|d|w))+$")
SHORT = re.compile(r"^\d\d:\d\d:\d\d(\.\d{1,3})?$")
ACTIONS = {"raise", "escalate", "downgrade", "clear"}


def ts_ok(s):
    if SHORT.match(s):
        return True
    try:
        return datetime.fromisoformat(s).tzinfo is not None and "T" in s
    except ValueError:
        return False


def check(d: Path, errs):
    def err(msg):
        errs.append(f"{d.name}: {msg}")

    try:
        c = tomllib.loads((d / "case.toml").read_text())
    except Exception as e:  # noqa: BLE001
        return err(f"case.toml: {e}")
    for k in set(c) - KEYS:
        err(f"unknown key {k!r}")
    for k in REQUIRED - set(c):
        err(f"missing key {k!r}")
    if c.get("clock") not in ("wall", "event"):
        err("clock must be wall or event")
    for k in ("watermark-delay", "future-skew"):
        if k in c and not DUR.match(c[k]):
            err(f"{k}: bad duration {c[k]!r}")
    if c.get("clock") == "event" and "future-skew" in c:
        err("future-skew only applies in wall mode")
    for k in c.get("counters", {}):
        if k not in COUNTERS:
            err(f"unknown counter {k!r}")
    rules = (d / "rules.rules").read_text() if (d / "rules.rules").exists() else ""
    if not rules:
        err("rules.rules missing or empty")
    feeds_declared = set(re.findall(r"^\s*feed\s+(\w+)\s*:", rules, re.M))
    rules_declared = {}
    for m in re.finditer(r"^\s*rule\s+(\w+)\s+on\s+[^:]*?(?:levels\s+([^:]+))?:", rules, re.M):
        levels = set(re.findall(r"\w+", m.group(2) or ""))
        rules_declared[m.group(1)] = levels
    for m in re.finditer(r"^\s*levels\s+(\w+)\s*:\s*(.+)$", rules, re.M):
        for r, lv in rules_declared.items():
            if m.group(1) in lv:
                rules_declared[r] = lv | set(re.findall(r"\w+", m.group(2)))
    for t in re.findall(r'^\s*table\s+\w+\s*:\s*"([^"]+)"', rules, re.M):
        if not (d / t).exists():
            err(f"table file {t} missing")
    globs = c.get("feeds", {})
    for g, f in globs.items():
        if f not in feeds_declared:
            err(f"[feeds] {g!r} -> {f!r}: feed not declared in rules.rules")
    entities = set()
    for name in c.get("inputs", []):
        p = d / name
        if not p.exists():
            err(f"input {name} missing")
            continue
        raw = p.read_bytes()
        if not raw.endswith(b"\n"):
            err(f"{name}: no final newline")
        for i, line in enumerate(raw.split(b"\n")[:-1], 1):
            if name.endswith(".csv"):
                parts = line.decode().split(",")
                if len(parts) != 3:
                    err(f"{name}:{i}: expected 3 fields")
                    continue
                if parts[0] == "@clock":
                    if parts[2] != "" or not ts_ok(parts[1]) or SHORT.match(parts[1]):
                        err(f"{name}:{i}: bad clock line")
                    if c.get("clock") == "event":
                        err(f"{name}:{i}: @clock line in an event-clock case")
                    continue
                entities.add(parts[0])
                if not ts_ok(parts[1]):
                    err(f"{name}:{i}: bad timestamp {parts[1]!r}")
            elif name.endswith(".jsonl"):
                try:
                    v = json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    continue  # a garbage line is an input to reject
                for o in v if isinstance(v, list) else [v]:
                    if isinstance(o, dict) and "entity" in o:
                        entities.add(o["entity"])
            else:
                err(f"input {name}: extension must be .csv or .jsonl")
                break
    unmapped = {e for e in entities if not any(fnmatch.fnmatchcase(e, g) for g in globs)}
    if unmapped and not c.get("counters", {}).get("unknown_entity"):
        err(f"entities matching no [feeds] glob: {sorted(unmapped)}")
    exp = d / "expected.txt"
    if not exp.exists():
        return err("expected.txt missing")
    for i, line in enumerate(exp.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        f = [x.strip() for x in line.split("|")]
        if len(f) < 5:
            err(f"expected.txt:{i}: fewer than 5 fields")
            continue
        ent, rule, level, action, at = f[:5]
        if not ts_ok(at):
            err(f"expected.txt:{i}: bad time {at!r}")
        if level == "status":
            if not c.get("status"):
                err(f"expected.txt:{i}: status line but status = false")
            if rule not in feeds_declared or action not in ("stale", "ok", "offline") or len(f) != 5:
                err(f"expected.txt:{i}: bad status line")
            continue
        if action not in ACTIONS:
            err(f"expected.txt:{i}: bad action {action!r}")
        if rule not in rules_declared:
            err(f"expected.txt:{i}: rule {rule!r} not in rules.rules")
            continue
        names = level.split(">")
        if (action in ("escalate", "downgrade")) != (len(names) == 2):
            err(f"expected.txt:{i}: level must be from>to exactly for escalate/downgrade")
        lv = rules_declared[rule]
        for n in names:
            if lv and n not in lv:
                err(f"expected.txt:{i}: level {n!r} not a level of {rule}")
            if not lv and not re.search(rf"^\s*{n}\s+when\b", rules, re.M):
                err(f"expected.txt:{i}: level {n!r} has no when clause")
        for kv in f[5:]:
            if not re.match(r"^[^=]+=\S+$", kv):
                err(f"expected.txt:{i}: bad name=value {kv!r}")


def main():
    errs = []
    dirs = sorted(p for p in HERE.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    for d in dirs:
        check(d, errs)
    print("\n".join(errs) if errs else f"{len(dirs)} cases OK")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
