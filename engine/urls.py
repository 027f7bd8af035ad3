"""URL helpers that never log or reveal what they carry (DSNs hold passwords)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def with_query(url: str, **params: str) -> str:
    """Return ``url`` with the query parameters ``params`` set (replaced or added).

    The other parameters, the user, password, host and path are kept as they are.
    """
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*query, *params.items()])))
