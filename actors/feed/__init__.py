"""Feed actors: simulator, replay, Redis Streams consumer (ingest endpoints live in the gateway)."""
