"""The market actor: quotes, candles, option chains, routing ticks to accounts."""
