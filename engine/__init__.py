"""tickstream runtime: config, supervision, storage, bus, gateway and CLI."""
