"""Instruments the end-to-end tests upsert: a NIFTY future and an equity."""

from __future__ import annotations

from typing import Final

FUT: Final = "NIFTY26DECFUT"
NIFTY_FUTURE: Final = {
    "symbol": FUT,
    "kind": "future",
    "underlying": "NIFTY",
    "expiry": "2026-12-29",
    "lot_size": 65,
    "tick_size": "0.05",
}
SBIN: Final = {"symbol": "SBIN", "kind": "equity", "lot_size": 1, "tick_size": "0.05"}
