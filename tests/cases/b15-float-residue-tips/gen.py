#!/usr/bin/env python3
"""Writes input.csv for B15: tips of 0.2 mm at 10:00:00+08:00 + 24*k s, k = 1..150, then a clock line."""
from datetime import datetime, timedelta
from pathlib import Path

t0 = datetime.fromisoformat("2024-07-01T10:00:00+08:00")
lines = [f"G1,{(t0 + timedelta(seconds=24 * k)).isoformat()},0.2" for k in range(1, 151)]
lines.append("@clock,2024-07-01T12:00:00+08:00,")
Path(__file__).with_name("input.csv").write_text("\n".join(lines) + "\n")
