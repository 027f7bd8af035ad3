"""Shared test builders and fakes (STYLE rule 45)."""
