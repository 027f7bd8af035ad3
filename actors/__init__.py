"""Actors: one module per actor kind (feed, market, account, control, connection)."""
