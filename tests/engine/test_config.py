"""Configuration: defaults, environment overrides, secrets, and the errors that stop start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, Secret, load_config, redact_url

SECRET = "s" * 40


def test_defaults_match_protocol_table() -> None:
    """With no environment, host/port/issuer/audience are PROTOCOL.md's defaults."""
    cfg = load_config(env={})
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8081)
    assert (cfg.auth.issuer, cfg.auth.audience) == ("tickstream", "tickstream")
    assert cfg.database.url is None and cfg.redis.url is None and cfg.auth.jwt_secret is None
    assert cfg.server.max_body_bytes == 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("toml", "interval"), [("", 0.25), ("[market]\ncandle_publish_interval = 0\n", 0.0)]
)
def test_candle_publish_interval_defaults_to_a_quarter_second_and_zero_is_allowed(
    tmp_path: Path, toml: str, interval: float
) -> None:
    """Forming candles are published every 0.25 s by default; 0 (every batch) is valid."""
    f = tmp_path / "c.toml"
    f.write_text(toml)
    assert load_config(f, env={}).market.candle_publish_interval == interval
    assert load_config(env={}).market.candle_publish_interval == 0.25


def test_environment_overrides_the_file() -> None:
    """TICKSTREAM_* variables replace the TOML values and are typed."""
    cfg = load_config(
        env={
            "TICKSTREAM_HOST": "0.0.0.0",
            "TICKSTREAM_PORT": "9001",
            "TICKSTREAM_DATABASE_URL": "postgresql://u:pw@db/x",
            "TICKSTREAM_REDIS_URL": "redis://r:6379/0",
            "TICKSTREAM_JWT_SECRET": SECRET,
            "TICKSTREAM_JWT_ISSUER": "iss2",
            "TICKSTREAM_JWT_AUDIENCE": "aud2",
        }
    )
    assert cfg.server.host == "0.0.0.0" and cfg.server.port == 9001
    assert cfg.database.url == Secret("postgresql://u:pw@db/x")
    assert cfg.redis.url == Secret("redis://r:6379/0")
    assert cfg.auth.jwt_secret is not None and cfg.auth.jwt_secret.reveal() == SECRET
    assert (cfg.auth.issuer, cfg.auth.audience) == ("iss2", "aud2")


def test_secret_file_variable_is_read_and_stripped(tmp_path: Path) -> None:
    """TICKSTREAM_JWT_SECRET_FILE names a file whose content is the key."""
    f = tmp_path / "jwt"
    f.write_text(SECRET + "\n")
    cfg = load_config(env={"TICKSTREAM_JWT_SECRET_FILE": str(f)})
    assert cfg.auth.jwt_secret == Secret(SECRET)


def test_both_secret_and_secret_file_is_an_error(tmp_path: Path) -> None:
    """Setting a secret twice is ambiguous and refused."""
    f = tmp_path / "jwt"
    f.write_text(SECRET)
    with pytest.raises(ConfigError, match="TICKSTREAM_JWT_SECRET_FILE"):
        load_config(env={"TICKSTREAM_JWT_SECRET": SECRET, "TICKSTREAM_JWT_SECRET_FILE": str(f)})


def test_missing_secret_file_names_the_variable(tmp_path: Path) -> None:
    """An unreadable secret file is named, its content never shown."""
    with pytest.raises(ConfigError, match="TICKSTREAM_JWT_SECRET_FILE"):
        load_config(env={"TICKSTREAM_JWT_SECRET_FILE": str(tmp_path / "missing")})


def test_short_jwt_secret_is_refused() -> None:
    """An HS256 key shorter than 32 bytes is too weak to start with."""
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_config(env={"TICKSTREAM_JWT_SECRET": "short"})


def test_secrets_never_show_in_repr_or_str() -> None:
    """repr/str of the config hide every secret."""
    cfg = load_config(
        env={"TICKSTREAM_JWT_SECRET": SECRET, "TICKSTREAM_DATABASE_URL": "postgresql://u:pw@h/d"}
    )
    text = repr(cfg) + str(cfg) + str(cfg.auth.jwt_secret)
    assert SECRET not in text and "pw@" not in text


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[server]\nportt = 1\n", "server.portt"),
        ("[server]\nport = 'x'\n", "server.port"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[database]\npool_max = 0\n", "database.pool_max"),
        ("[log]\nformat = 'xml'\n", "log.format"),
        ("[nonsense]\na = 1\n", "nonsense"),
        ("[server]\ngraceful_timeout = -1.0\n", "server.graceful_timeout"),
        ("[stream]\nqueue_capacity = 0\n", "stream.queue_capacity"),
        ("[stream]\nidle_timeout = 31.0\n", "stream.idle_timeout"),
        ("[market]\ncandle_publish_interval = -0.25\n", "market.candle_publish_interval"),
        ("[market]\ncandle_publish_interval = 60.0\n", "market.candle_publish_interval"),
        ("[market]\ncandle_publish_interval = nan\n", "market.candle_publish_interval"),
    ],
)
def test_bad_file_values_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    """Unknown keys, wrong types and out-of-range values name the key."""
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(f, env={})


@pytest.mark.parametrize(
    "toml", ["[auth]\njwt_secret = 'x'\n", "[database]\nurl = 'postgresql://a'\n"]
)
def test_secrets_in_the_file_are_refused(tmp_path: Path, toml: str) -> None:
    """A secret may only come from the environment, never from the TOML file."""
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match="secret"):
        load_config(f, env={})


def test_bad_port_in_environment_names_the_variable() -> None:
    """A non-numeric TICKSTREAM_PORT is refused by name."""
    with pytest.raises(ConfigError, match="TICKSTREAM_PORT"):
        load_config(env={"TICKSTREAM_PORT": "http"})


def test_config_path_from_environment(tmp_path: Path) -> None:
    """TICKSTREAM_CONFIG picks the file; an unreadable one is named."""
    f = tmp_path / "c.toml"
    f.write_text("[server]\nport = 1234\n")
    assert load_config(env={"TICKSTREAM_CONFIG": str(f)}).server.port == 1234
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(env={"TICKSTREAM_CONFIG": str(tmp_path / "nope.toml")})


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    """A syntax error in the file stops start-up with a clear message."""
    f = tmp_path / "c.toml"
    f.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f, env={})


def test_redact_url_hides_only_the_password() -> None:
    """DSNs are logged without their password."""
    assert redact_url("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact_url("postgresql://u@h/d") == "postgresql://u@h/d"
