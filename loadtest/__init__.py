"""Load generator, market simulator and benchmark scripts."""
