"""Average-cost positions (FINANCE.md §7): the fold, its exactness, output rounding, snapshots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from actors.account.positions import (
    Fill,
    FillError,
    Portfolio,
    Position,
    PositionError,
    SnapshotError,
)

SYMBOLS = ("BANKNIFTY", "NIFTY")
# Bound for values derived from a rounded cost (60 significant digits): far below any quantum.
TOLERANCE = Fraction(1, 10**40)


def fill(side: str, qty: int, price: str, fee: str = "0", symbol: str = "NIFTY") -> Fill:
    return Fill(symbol=symbol, side=side, qty=qty, price=Decimal(price), fee=Decimal(fee), ts=0)


def fold(*fills: Fill) -> Portfolio:
    return Portfolio.rebuild(fills)


def wire(portfolio: Portfolio, symbol: str = "NIFTY") -> dict[str, object]:
    view = portfolio.position(symbol)
    assert view is not None
    return view.to_wire()


def held(portfolio: Portfolio, symbol: str = "NIFTY") -> Position:
    position = portfolio.state(symbol)
    assert position is not None
    return position


# -- hand cases -------------------------------------------------------------------------------


def test_open_long_sets_avg_to_the_price_and_realizes_nothing() -> None:
    """A first buy opens at its price; the fee is booked, nothing is realized or valued."""
    p = fold(fill("buy", 10, "100.50", fee="1.25"))
    assert wire(p) == {
        "symbol": "NIFTY",
        "net_quantity": "10",
        "avg_price": "100.50000000",
        "last_price": None,
        "realized_pnl": "0.00",
        "unrealized_pnl": "0.00",
        "fees": "1.25",
    }
    assert held(p).avg == Fraction("100.5")


def test_add_to_long_averages_by_quantity() -> None:
    """Adding 30 @ 102 to 10 @ 100 gives avg (1000 + 3060) / 40 = 101.5."""
    p = fold(fill("buy", 10, "100"), fill("buy", 30, "102"))
    assert wire(p)["avg_price"] == "101.50000000"
    assert wire(p)["net_quantity"] == "40"
    assert held(p).realized == 0


def test_partial_close_realizes_at_avg_and_keeps_avg() -> None:
    """Selling 15 @ 103.25 against avg 101.5 realizes exactly 26.25; avg stays 101.5."""
    p = fold(fill("buy", 10, "100"), fill("buy", 30, "102"), fill("sell", 15, "103.25"))
    assert held(p).realized == Decimal("26.25")
    assert held(p).avg == Fraction("101.5")
    assert wire(p)["net_quantity"] == "25"
    assert wire(p)["realized_pnl"] == "26.25"


def test_full_close_nulls_avg_and_keeps_the_position_listed() -> None:
    """Closing the rest realizes (100 − 101.5)·25 more; the flat position stays with net "0"."""
    p = fold(
        fill("buy", 10, "100"),
        fill("buy", 30, "102"),
        fill("sell", 15, "103.25"),
        fill("sell", 25, "100"),
    )
    p.mark("NIFTY", Decimal("120"))
    assert held(p).realized == Decimal("-11.25")
    assert held(p).avg is None
    assert [v.to_wire() for v in p.positions()] == [
        {
            "symbol": "NIFTY",
            "net_quantity": "0",
            "avg_price": None,
            "last_price": "120",
            "realized_pnl": "-11.25",
            "unrealized_pnl": "0.00",
            "fees": "0.00",
        }
    ]


def test_open_symbols_are_the_non_flat_positions() -> None:
    """A long and a short are open; a position closed to flat is listed but not open."""
    p = fold(
        fill("buy", 10, "100"),
        fill("sell", 5, "50", symbol="INFY"),
        fill("buy", 3, "10", symbol="TCS"),
        fill("sell", 3, "11", symbol="TCS"),
    )
    assert p.open_symbols() == {"NIFTY", "INFY"}
    assert [v.symbol for v in p.positions()] == ["INFY", "NIFTY", "TCS"]


def test_short_open_add_and_cover_realize_avg_minus_price() -> None:
    """Sell 5 @ 200 + 15 @ 204 → avg 203; covering 8 @ 199.5 realizes (203 − 199.5)·8 = 28."""
    p = fold(fill("sell", 5, "200"), fill("sell", 15, "204"))
    assert wire(p)["avg_price"] == "203.00000000"
    assert wire(p)["net_quantity"] == "-20"
    p.apply(fill("buy", 8, "199.5"))
    p.mark("NIFTY", Decimal("210"))
    assert held(p).realized == Decimal("28")
    assert held(p).unrealized == Decimal("-84")  # (210 − 203)·(−12)
    assert wire(p)["net_quantity"] == "-12"
    assert wire(p)["avg_price"] == "203.00000000"
    assert wire(p)["realized_pnl"] == "28.00"
    assert wire(p)["unrealized_pnl"] == "-84.00"


def test_flip_long_to_short_realizes_on_the_old_quantity_and_books_the_whole_fee() -> None:
    """Long 10 @ 100, sell 25 @ 110: realize 100 on 10, open 15 short @ 110, fees 2 + 5."""
    p = fold(fill("buy", 10, "100", fee="2"), fill("sell", 25, "110", fee="5"))
    p.mark("NIFTY", Decimal("108"))
    assert held(p).realized == Decimal("100")
    assert held(p).fees == Decimal("7")
    assert held(p).unrealized == Decimal("30")  # (108 − 110)·(−15)
    assert wire(p)["net_quantity"] == "-15"
    assert wire(p)["avg_price"] == "110.00000000"
    assert p.pnl().to_wire() == {
        "realized": "100.00",
        "unrealized": "30.00",
        "fees": "7.00",
        "net": "123.00",
    }


def test_flip_short_to_long_realizes_on_the_old_quantity_and_books_the_whole_fee() -> None:
    """Short 4 @ 50.05, buy 10 @ 49.95: realize 0.40 on 4, open 6 long @ 49.95, fees 0.40."""
    p = fold(fill("sell", 4, "50.05", fee="0.10"), fill("buy", 10, "49.95", fee="0.30"))
    assert held(p).realized == Decimal("0.40")
    assert held(p).fees == Decimal("0.40")
    assert wire(p)["net_quantity"] == "6"
    assert wire(p)["avg_price"] == "49.95000000"


def test_fees_accumulate_exactly_and_round_only_in_the_view() -> None:
    """Fees 0.0125 + 0.0125 + 0.0001 are held as 0.0251 and shown as 0.03."""
    p = fold(
        fill("buy", 1, "10", fee="0.0125"),
        fill("buy", 1, "10", fee="0.0125"),
        fill("sell", 2, "10", fee="0.0001"),
    )
    assert held(p).fees == Decimal("0.0251")
    assert wire(p)["fees"] == "0.03"
    assert p.pnl().to_wire() == {
        "realized": "0.00",
        "unrealized": "0.00",
        "fees": "0.03",
        "net": "-0.03",
    }


def test_sub_paise_prices_are_held_exactly() -> None:
    """Prices of 0.0025 and 0.003 average to 0.00275 and realize 0.0075 on 3 units exactly."""
    p = fold(fill("buy", 1, "0.0025"), fill("buy", 1, "0.0030"))
    assert wire(p)["avg_price"] == "0.00275000"
    q = fold(fill("buy", 3, "0.0025"), fill("sell", 3, "0.0050"))
    assert held(q).realized == Decimal("0.0075")
    assert wire(q)["realized_pnl"] == "0.01"


def test_repeating_avg_is_exact_and_shown_at_8_dp() -> None:
    """Buy 1 @ 100 + 2 @ 101 → avg exactly 302/3, shown 100.66666667."""
    p = fold(fill("buy", 1, "100"), fill("buy", 2, "101"))
    assert held(p).avg == Fraction(302, 3)
    assert held(p).cost == Decimal("302")
    assert wire(p)["avg_price"] == "100.66666667"


def test_realized_third_is_rounded_deep_and_exact_again_once_flat() -> None:
    """Selling 1 of 302/3 realizes ≈ 1/3 (cost's one rounding); going flat realizes exactly 1."""
    p = fold(fill("buy", 1, "100"), fill("buy", 2, "101"), fill("sell", 1, "101"))
    assert abs(Fraction(held(p).realized) - Fraction(1, 3)) <= TOLERANCE
    assert wire(p)["realized_pnl"] == "0.33"
    assert wire(p)["avg_price"] == "100.66666667"
    p.apply(fill("sell", 2, "101"))
    assert held(p).realized == Decimal("1")


@pytest.mark.parametrize(
    ("sell_price", "shown"),
    [
        ("100.125", "0.12"),
        ("100.135", "0.14"),
        ("99.875", "-0.12"),
        ("99.865", "-0.14"),
        ("99.996", "0.00"),  # −0.004 rounds to zero without a minus sign
    ],
)
def test_realized_rounds_half_even_at_the_cent(sell_price: str, shown: str) -> None:
    """Buy 1 @ 100 and sell at the given price: ties round to the even cent, either sign."""
    p = fold(fill("buy", 1, "100"), fill("sell", 1, sell_price))
    assert held(p).realized == Decimal(sell_price) - 100
    assert wire(p)["realized_pnl"] == shown
    assert p.pnl().realized == Decimal(shown)


@pytest.mark.parametrize(
    ("second", "shown"), [("1.00000002", "1.00000002"), ("1.00000003", "1.00000002")]
)
def test_avg_rounds_half_even_at_8_dp(second: str, shown: str) -> None:
    """An avg of 1.000000015 or 1.000000025 (a tie at 8 dp) shows the even neighbour."""
    first = str(Decimal(second) - Decimal("0.00000001"))
    assert wire(fold(fill("buy", 1, first), fill("buy", 1, second)))["avg_price"] == shown


def test_avg_just_below_a_tie_is_rounded_once() -> None:
    """Avg 1.00000001499 shows 1.00000001 (rounding to 9 dp first would make a tie: 0.00000002)."""
    p = fold(fill("buy", 999, "1"), fill("buy", 1, "1.00001499"))
    assert held(p).avg == Fraction("1.00000001499")
    assert wire(p)["avg_price"] == "1.00000001"


def test_net_pnl_is_rounded_from_the_exact_sum_not_from_the_rounded_parts() -> None:
    """Realized 0.125 and unrealized 0.125 show as 0.12 each, and net 0.25, not 0.24."""
    p = fold(
        fill("buy", 1, "100", symbol="NIFTY"),
        fill("sell", 1, "100.125", symbol="NIFTY"),
        fill("buy", 1, "100", symbol="BANKNIFTY"),
    )
    p.mark("BANKNIFTY", Decimal("100.125"))
    pnl = p.pnl()
    assert pnl.to_wire() == {
        "realized": "0.12",
        "unrealized": "0.12",
        "fees": "0.00",
        "net": "0.25",
    }
    assert pnl.realized + pnl.unrealized - pnl.fees == Decimal("0.24")


def test_unmarked_open_position_is_valued_at_its_avg() -> None:
    """Before any mark, unrealized is 0 and last_price is null; a mark then values it."""
    p = fold(fill("buy", 4, "250.25"))
    assert held(p).unrealized == 0
    assert wire(p)["last_price"] is None
    view = p.mark("NIFTY", Decimal("251.2575"))
    assert view is not None
    assert view.to_wire()["unrealized_pnl"] == "4.03"  # 1.0075·4 = 4.03 exactly
    assert held(p).unrealized == Decimal("4.0300")


def test_mark_of_an_untraded_symbol_creates_no_position() -> None:
    """A tick for a symbol the account never traded is ignored."""
    p = fold(fill("buy", 1, "100"))
    assert p.mark("SENSEX", Decimal("80000")) is None
    assert [v.symbol for v in p.positions()] == ["NIFTY"]


def test_positions_are_sorted_by_symbol() -> None:
    """positions() lists by symbol whatever the order of first trade."""
    p = fold(fill("buy", 1, "1", symbol="ZEEL"), fill("buy", 1, "1", symbol="ACC"))
    assert [v.symbol for v in p.positions()] == ["ACC", "ZEEL"]


def test_integral_decimal_qty_is_stored_as_int() -> None:
    """A NUMERIC quantity such as Decimal("5.000") becomes the int 5."""
    f = Fill(symbol="X", side="buy", qty=Decimal("5.000"), price=Decimal("1"), fee=Decimal(0), ts=0)
    assert f.qty == 5
    assert type(f.qty) is int


_VALID = {
    "symbol": "X",
    "side": "buy",
    "qty": 1,
    "price": Decimal("1"),
    "fee": Decimal("0"),
    "ts": 0,
}


@pytest.mark.parametrize(
    ("change", "field_name", "reason"),
    [
        ({"qty": 0}, "qty", "not_positive"),
        ({"qty": -3}, "qty", "not_positive"),
        ({"qty": Decimal("1.5")}, "qty", "not_integer"),
        ({"qty": 1.0}, "qty", "not_integer"),
        ({"qty": True}, "qty", "not_integer"),
        ({"price": Decimal("0")}, "price", "not_positive"),
        ({"price": Decimal("-101.5")}, "price", "not_positive"),
        ({"price": 101.5}, "price", "not_decimal"),
        ({"price": Decimal("NaN")}, "price", "not_decimal"),
        ({"price": Decimal("Infinity")}, "price", "not_decimal"),
        ({"fee": Decimal("-0.01")}, "fee", "negative"),
        ({"fee": Decimal("sNaN")}, "fee", "not_decimal"),
        ({"side": "BUY"}, "side", "unknown"),
        ({"side": "short"}, "side", "unknown"),
        ({"symbol": ""}, "symbol", "empty"),
        ({"ts": 1.5}, "ts", "not_integer"),
    ],
)
def test_invalid_fill_is_refused(change: dict[str, object], field_name: str, reason: str) -> None:
    """A malformed fill raises FillError naming the field and a stable reason."""
    with pytest.raises(FillError) as info:
        Fill(**{**_VALID, **change})
    assert (info.value.field, info.value.reason) == (field_name, reason)


def test_fill_for_another_symbol_is_refused_by_a_position() -> None:
    """Position.apply refuses a fill of another symbol and leaves the state unchanged."""
    position = Position("NIFTY")
    with pytest.raises(FillError) as info:
        position.apply(fill("buy", 1, "1", symbol="BANKNIFTY"))
    assert info.value.reason == "wrong_position"
    assert position == Position("NIFTY")


@pytest.mark.parametrize("price", [Decimal("0"), Decimal("-1"), Decimal("NaN")])
def test_invalid_mark_is_refused(price: Decimal) -> None:
    """A mark at a non-positive or non-finite price raises PositionError."""
    p = fold(fill("buy", 1, "100"))
    with pytest.raises(PositionError):
        p.mark("NIFTY", price)
    with pytest.raises(PositionError):
        p.mark("SENSEX", price)
    assert wire(p)["last_price"] is None


def _snapshot_with(**change: object) -> dict[str, object]:
    raw = {
        "symbol": "X",
        "net_qty": "2",
        "cost": "3",
        "cash": "-3",
        "fees": "0",
        "last_price": None,
    }
    return {"version": 1, "positions": [{**raw, **change}]}


@pytest.mark.parametrize(
    ("snapshot", "field_name", "reason"),
    [
        ({"version": 2, "positions": []}, "version", "unsupported"),
        ({"version": 1, "positions": {}}, "positions", "not_list"),
        (_snapshot_with(extra=1), "positions", "bad_fields"),
        (_snapshot_with(net_qty="1.5"), "net_qty", "not_integer"),
        (_snapshot_with(cost="0"), "cost", "inconsistent"),
        (_snapshot_with(cost="-3"), "cost", "inconsistent"),
        (_snapshot_with(net_qty="0"), "cost", "inconsistent"),
        (_snapshot_with(cash="NaN"), "cash", "not_decimal"),
        (_snapshot_with(fees=1), "fees", "not_decimal"),
        (_snapshot_with(fees="-1"), "fees", "negative"),
        (_snapshot_with(last_price="0"), "last_price", "not_positive"),
        (_snapshot_with(symbol=""), "symbol", "empty"),
    ],
)
def test_invalid_snapshot_is_refused(
    snapshot: dict[str, object], field_name: str, reason: str
) -> None:
    """from_snapshot refuses a malformed or inconsistent state with a typed error."""
    with pytest.raises(SnapshotError) as info:
        Portfolio.from_snapshot(snapshot)
    assert (info.value.field, info.value.reason) == (field_name, reason)


def test_snapshot_with_a_duplicate_symbol_is_refused() -> None:
    """Two entries for one symbol cannot both be the state."""
    snapshot = _snapshot_with()
    snapshot["positions"] = snapshot["positions"] * 2
    with pytest.raises(SnapshotError) as info:
        Portfolio.from_snapshot(snapshot)
    assert info.value.reason == "duplicate"


# -- properties -------------------------------------------------------------------------------


def _scaled(n: int) -> Decimal:
    return Decimal(n).scaleb(-4)


# Up to 4 decimals; small values often, so sub-paise prices (0.0025) and fees come up.
prices = st.one_of(st.integers(1, 100), st.integers(1, 10**8)).map(_scaled)
fees = st.one_of(st.just(0), st.integers(0, 100), st.integers(0, 10**6)).map(_scaled)
# Small quantities often, so positions go exactly flat and flip.
quantities = st.one_of(st.integers(1, 10), st.integers(1, 10_000))
fills = st.builds(
    Fill,
    symbol=st.sampled_from(SYMBOLS),
    side=st.sampled_from(("buy", "sell")),
    qty=quantities,
    price=prices,
    fee=fees,
    ts=st.just(0),
)
marks = st.tuples(st.sampled_from(SYMBOLS), prices)
events = st.lists(st.one_of(fills, fills, marks), max_size=60)


@dataclass
class Reference:
    """FINANCE.md §7 literally, in Fractions, plus the cash flows of the identity."""

    net: int = 0
    avg: Fraction | None = None
    realized: Fraction = Fraction(0)
    fees: Fraction = Fraction(0)
    cash: Fraction = Fraction(0)  # Σ sell price·qty − Σ buy price·qty
    last: Fraction | None = None
    # Whether a reduce left a cost that is not a terminating decimal (so the module rounded
    # it) since the position was last flat or flipped.
    rounded: bool = False

    def apply(self, f: Fill) -> None:
        price, qty = Fraction(f.price), f.qty
        signed = qty if f.side == "buy" else -qty
        self.fees += Fraction(f.fee)
        self.cash -= price * signed
        if self.net == 0 or (self.net > 0) == (signed > 0):
            size = abs(self.net)
            self.avg = ((self.avg or 0) * size + price * qty) / (size + qty)
        else:
            assert self.avg is not None
            closed = min(qty, abs(self.net))
            gain = (price - self.avg) if self.net > 0 else (self.avg - price)
            self.realized += gain * closed
            if qty > abs(self.net):
                self.avg, self.rounded = price, False
            elif qty == abs(self.net):
                self.avg, self.rounded = None, False
            elif not _terminates(self.avg * (self.net + signed)):
                self.rounded = True
        self.net += signed

    @property
    def unrealized(self) -> Fraction:
        if self.net == 0 or self.last is None:
            return Fraction(0)
        assert self.avg is not None
        return (self.last - self.avg) * self.net


def _terminates(x: Fraction) -> bool:
    den = x.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    return den == 1


def _shown(x: Fraction, places: int) -> str:
    r = round(x, places)  # Fraction rounds half to even
    with localcontext() as ctx:
        ctx.prec = 100
        return format(Decimal(r.numerator) / r.denominator, f".{places}f")


def _near_tie(x: Fraction, places: int) -> bool:
    scaled = x * 10**places
    return abs(scaled - math.floor(scaled) - Fraction(1, 2)) <= TOLERANCE * 10**places


def _replay(evs: list[Fill | tuple[str, Decimal]]) -> tuple[Portfolio, dict[str, Reference]]:
    portfolio, refs = Portfolio(), {s: Reference() for s in SYMBOLS}
    for ev in evs:
        if isinstance(ev, Fill):
            portfolio.apply(ev)
            refs[ev.symbol].apply(ev)
        elif portfolio.mark(*ev) is not None:
            refs[ev[0]].last = Fraction(ev[1])
    return portfolio, refs


@settings(max_examples=300)
@given(events, st.tuples(prices, prices))
def test_pnl_equals_cash_flows_plus_mark_value_exactly(
    evs: list[Fill | tuple[str, Decimal]], final_marks: tuple[Decimal, Decimal]
) -> None:
    """realized + unrealized − fees == Σ sells − Σ buys − Σ fees + net·last, with ==."""
    portfolio, refs = _replay(evs)
    for symbol, last in zip(SYMBOLS, final_marks, strict=True):
        if portfolio.mark(symbol, last) is not None:
            refs[symbol].last = Fraction(last)
    total = Fraction(0)
    for view in portfolio.positions():
        ref, pos = refs[view.symbol], held(portfolio, view.symbol)
        assert ref.last is not None
        expected = ref.cash - ref.fees + ref.net * ref.last
        got = Fraction(pos.realized) + Fraction(pos.unrealized) - Fraction(pos.fees)
        assert got == expected
        total += expected
    # net P&L is the exact identity rounded once, so it matches even at a half-cent tie.
    assert format(portfolio.pnl().net, "f") == _shown(total, 2)


@settings(max_examples=300)
@given(events)
def test_fold_agrees_with_the_rational_reference_at_every_step(
    evs: list[Fill | tuple[str, Decimal]],
) -> None:
    """Net is Σ signed qty, avg null iff flat, and state and views match exact rationals."""
    for k in range(len(evs) + 1):
        portfolio, refs = _replay(evs[:k])
        for view in portfolio.positions():
            ref, pos = refs[view.symbol], held(portfolio, view.symbol)
            assert pos.net_qty == ref.net
            assert (pos.avg is None) == (pos.net_qty == 0) == (view.avg_price is None)
            assert Fraction(pos.fees) == ref.fees
            assert Fraction(pos.cash) == ref.cash
            pairs = [
                (pos.avg, ref.avg, 8, "avg_price"),
                (pos.realized, ref.realized, 2, "realized_pnl"),
            ]
            pairs.append((pos.unrealized, ref.unrealized, 2, "unrealized_pnl"))
            shown = view.to_wire()
            event("rounded cost" if ref.rounded else "exact cost")
            for ours, exact, places, name in pairs:
                if exact is None:
                    continue
                assert ours is not None
                if ref.rounded:
                    # Only a non-terminating quotient was rounded, 60 digits deep.
                    assert abs(Fraction(ours) - exact) <= TOLERANCE
                    if not _near_tie(exact, places):
                        assert shown[name] == _shown(exact, places)
                else:
                    assert Fraction(ours) == exact
                    assert shown[name] == _shown(exact, places)
            assert shown["fees"] == _shown(ref.fees, 2)
            assert shown["net_quantity"] == str(ref.net)


@given(st.lists(fills, max_size=60), st.data())
def test_snapshot_plus_remaining_fills_equals_folding_all(
    fs: list[Fill], data: st.DataObject
) -> None:
    """A JSON round-tripped snapshot of a prefix plus the rest gives the whole fold's state."""
    k = data.draw(st.integers(0, len(fs)))
    prefix = Portfolio.rebuild(fs[:k])
    snapshot = json.loads(json.dumps(prefix.snapshot()))
    assert Portfolio.from_snapshot(snapshot).snapshot() == prefix.snapshot()
    resumed = Portfolio.rebuild(fs[k:], snapshot=snapshot)
    whole = Portfolio.rebuild(fs)
    assert resumed == whole
    assert resumed.snapshot() == whole.snapshot()
    assert resumed.pnl() == whole.pnl()
    assert resumed.positions() == whole.positions()


@given(st.lists(fills, max_size=60))
def test_fold_is_deterministic_and_symbols_do_not_interact(fs: list[Fill]) -> None:
    """Refolding gives the same state to the digit; each symbol folded alone gives its position."""
    whole = Portfolio.rebuild(fs)
    assert Portfolio.rebuild(fs).snapshot() == whole.snapshot()
    for symbol in SYMBOLS:
        alone = Portfolio.rebuild(f for f in fs if f.symbol == symbol)
        assert alone.position(symbol) == whole.position(symbol)
