"""Typed, frozen configuration: ``config/default.toml`` plus ``TICKSTREAM_*`` overrides.

Unknown keys and wrong types stop start-up with a :class:`ConfigError` naming the
key; ``main`` turns it into exit code 2. Secrets only ever come from the
environment (or a ``*_FILE`` the environment names) and are held as
:class:`Secret`, whose ``repr`` and ``str`` never show the value.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .auth import KeySet, parse_key_lines
from .urls import with_query

DEFAULT_CONFIG_PATH: Final = Path("config/default.toml")
ENV_PREFIX: Final = "TICKSTREAM_"


class ConfigError(Exception):
    """The configuration is unusable; the message names the offending key."""


class Secret:
    """A secret value that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself (only for the code that must use it)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


_Model = ConfigDict(extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True)
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ServerConfig(BaseModel):
    """The HTTP/WebSocket listener."""

    model_config = _Model
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    graceful_timeout: PositiveFloat = 10.0
    keep_alive_timeout: PositiveFloat = 5.0
    read_timeout: PositiveFloat = 30.0
    ws_max_frame_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Security (README "Security"): CORS allowlist, TLS listener, HSTS, handshake timeout.
    cors_origins: list[str] = Field(default_factory=list)
    cors_allow_credentials: bool = False
    cors_max_age: int = Field(default=600, ge=0, le=86400)
    certfile: str = ""
    keyfile: str = ""
    hsts_max_age: int = Field(default=31536000, ge=0)
    ssl_handshake_timeout: PositiveFloat = 10.0

    @model_validator(mode="after")
    def _check_security(self) -> ServerConfig:
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN_RE.match(origin):
                raise ValueError(
                    f"cors_origins: {origin!r} is not an origin (scheme://host[:port])"
                )
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ValueError("cors_origins: '*' may not be used with cors_allow_credentials")
        if bool(self.certfile) != bool(self.keyfile):
            raise ValueError("certfile and keyfile: set both (TLS) or neither")
        return self

    @property
    def tls(self) -> bool:
        """Whether the listener serves https/wss."""
        return bool(self.certfile and self.keyfile)


class DatabaseConfig(BaseModel):
    """PostgreSQL pool and the embedded fallback."""

    model_config = _Model
    url: Secret | None = None
    pool_min: int = Field(default=2, ge=0)
    pool_max: int = Field(default=40, ge=1, le=1000)
    pool_share_of_max_connections: float = Field(default=0.5, gt=0, le=1)
    acquire_timeout: PositiveFloat = 2.0
    statement_timeout: PositiveFloat = 5.0
    connect_timeout: PositiveFloat = 5.0
    connect_retries: int = Field(default=5, ge=1, le=100)
    sslmode: Literal["", "disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = ""
    embedded_dir: str = "var/pg"
    embedded_database: str = Field(default="tickstream", pattern=r"^[a-z_][a-z0-9_]{0,62}$")


class RedisConfig(BaseModel):
    """The Redis bus (in-process bus when ``url`` is unset)."""

    model_config = _Model
    url: Secret | None = None
    connect_timeout: PositiveFloat = 5.0
    connect_retries: int = Field(default=5, ge=1, le=100)
    ssl_ca_certs: str = ""  # CA bundle for rediss:// URLs ("" = the system's)


class AuthConfig(BaseModel):
    """JWT verification."""

    model_config = _Model
    jwt_secret: Secret | None = None
    issuer: str = Field(default="tickstream", min_length=1)
    audience: str = Field(default="tickstream", min_length=1)
    leeway: float = Field(default=10.0, ge=0, le=300)
    demo_token_ttl: int = Field(default=86400, ge=60)
    jwt_keys: Secret | None = None  # "kid=secret" lines, oldest first; signs with the last
    token_ttl: int = Field(default=900, ge=30, le=86400)
    lockout_failures: int = Field(default=5, ge=1, le=1000)
    lockout_window: PositiveFloat = 300.0
    lockout_duration: PositiveFloat = 900.0

    def key_set(self) -> KeySet | None:
        """Return the verification keys by ``kid`` (None: no key configured).

        Parsed on each call (a few lines, microseconds): a cached copy would survive
        ``model_copy`` and go stale.
        """
        keys = parse_key_lines(self.jwt_keys.reveal()) if self.jwt_keys is not None else {}
        if not keys and self.jwt_secret is None:
            return None
        default = self.jwt_secret.reveal() if self.jwt_secret is not None else None
        return KeySet(keys, default)


class LogConfig(BaseModel):
    """Structured logging."""

    model_config = _Model
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"


class MailboxConfig(BaseModel):
    """Sizes of the bounded mailboxes."""

    model_config = _Model
    command_capacity: int = Field(default=64, ge=1, le=1_000_000)


class MarketConfig(BaseModel):
    """The market actor."""

    model_config = _Model
    inbox_capacity: int = Field(default=4, ge=1, le=100_000)
    stale_after: PositiveFloat = 15.0
    watchdog_interval: PositiveFloat = 1.0
    candle_flush_interval: PositiveFloat = 1.0
    candle_flush_rows: int = Field(default=2000, ge=1)
    # Seconds between publications of one forming candle (0 = every tick batch).
    candle_publish_interval: float = Field(default=0.25, ge=0, le=5, allow_inf_nan=False)
    max_tick_age: PositiveFloat = 86400.0
    max_tick_ahead: PositiveFloat = 60.0
    calendar_dir: str = ""  # "" = the folder "calendar" beside the config file


class FeedConfig(BaseModel):
    """Feed sources besides the ingest endpoints (always on)."""

    model_config = _Model
    simulator: bool = False
    simulator_rate: PositiveFloat = 2000.0
    simulator_seed: int = 7
    redis_stream: str = Field(default="", pattern=r"^[A-Za-z0-9:_.-]{0,100}$")
    redis_group: str = Field(default="tickstream", pattern=r"^[A-Za-z0-9:_.-]{1,100}$")
    redis_consumer: str = Field(default="node-1", pattern=r"^[A-Za-z0-9:_.-]{1,100}$")
    replay_path: str = ""
    replay_speed: float = Field(default=1.0, ge=0, allow_inf_nan=False)


class AccountsConfig(BaseModel):
    """Account actors, order rate limits."""

    model_config = _Model
    max_restarts: int = Field(default=3, ge=0, le=1000)
    restart_period: PositiveFloat = 60.0
    reply_timeout: PositiveFloat = 10.0
    orders_per_second_account: PositiveFloat = 50.0
    orders_burst_account: int = Field(default=100, ge=1)
    orders_per_second_subject: PositiveFloat = 100.0
    orders_burst_subject: int = Field(default=200, ge=1)


class StreamConfig(BaseModel):
    """``/ws/v1/stream``: per-connection queue, limits, heartbeat, resume."""

    model_config = _Model
    queue_capacity: int = Field(default=1024, ge=1, le=1_000_000)
    send_timeout: PositiveFloat = 10.0
    batch_max: int = Field(default=256, ge=1, le=100_000)
    max_subscriptions: int = Field(default=200, ge=1, le=100_000)
    frames_per_second: PositiveFloat = 50.0
    frames_burst: int = Field(default=100, ge=1)
    heartbeat_interval: PositiveFloat = 10.0
    idle_timeout: PositiveFloat = 25.0
    retention: int = Field(default=1024, ge=0, le=1_000_000)
    replay_max: int = Field(default=10_000, ge=0, le=10_000_000)
    drain_flush_timeout: PositiveFloat = 2.0


class Config(BaseModel):
    """The whole engine configuration, frozen once loaded."""

    model_config = _Model
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    auth: AuthConfig = AuthConfig()
    log: LogConfig = LogConfig()
    mailbox: MailboxConfig = MailboxConfig()
    market: MarketConfig = MarketConfig()
    feed: FeedConfig = FeedConfig()
    accounts: AccountsConfig = AccountsConfig()
    stream: StreamConfig = StreamConfig()


# Keys a TOML file may not carry: they are secrets and come from the environment only.
_SECRET_KEYS: Final = frozenset(
    {("database", "url"), ("redis", "url"), ("auth", "jwt_secret"), ("auth", "jwt_keys")}
)
_ORIGIN_RE: Final = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")

# Environment variable → (section, key, parser). Secrets are wrapped after parsing.
_ENV: Final[Mapping[str, tuple[str, str, type]]] = {
    "TICKSTREAM_HOST": ("server", "host", str),
    "TICKSTREAM_PORT": ("server", "port", int),
    "TICKSTREAM_DATABASE_URL": ("database", "url", Secret),
    "TICKSTREAM_REDIS_URL": ("redis", "url", Secret),
    "TICKSTREAM_JWT_SECRET": ("auth", "jwt_secret", Secret),
    "TICKSTREAM_JWT_KEYS": ("auth", "jwt_keys", Secret),
    "TICKSTREAM_JWT_ISSUER": ("auth", "issuer", str),
    "TICKSTREAM_JWT_AUDIENCE": ("auth", "audience", str),
    "TICKSTREAM_LOG_LEVEL": ("log", "level", str),
    "TICKSTREAM_LOG_FORMAT": ("log", "format", str),
}
_FILE_SUFFIX: Final = "_FILE"
_SECRET_ENV: Final = (
    "TICKSTREAM_JWT_SECRET",
    "TICKSTREAM_DATABASE_URL",
    "TICKSTREAM_REDIS_URL",
    "TICKSTREAM_JWT_KEYS",
)
MIN_JWT_SECRET_BYTES: Final = 32


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, values in data.items():
        if isinstance(values, dict):
            for key in values:
                if (section, key) in _SECRET_KEYS:
                    raise ConfigError(
                        f"{section}.{key} is a secret and may not be set in {path}; "
                        "use the environment instead"
                    )
    return data


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in _SECRET_ENV:
        file_var = name + _FILE_SUFFIX
        if file_var in env:
            if name in env:
                raise ConfigError(f"set either {name} or {file_var}, not both")
            try:
                value = Path(env[file_var]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{file_var}: cannot read file: {exc.strerror}") from None
            env = {**env, name: value}
    for name, (section, key, kind) in _ENV.items():
        if name not in env:
            continue
        raw = env[name]
        parsed: Any
        if kind is int:
            try:
                parsed = int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be an integer") from None
        elif kind is Secret:
            if not raw:
                raise ConfigError(f"{name} is set but empty")
            parsed = Secret(raw)
        else:
            parsed = raw
        out.setdefault(section, {})[key] = parsed
    return out


def _format_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the configuration file and apply environment overrides.

    Args:
        path: the TOML file; default ``$TICKSTREAM_CONFIG`` or ``config/default.toml``.
        env: the environment to read (default ``os.environ``).

    Returns:
        The frozen :class:`Config`.

    Raises:
        ConfigError: naming the key that is unknown, of the wrong type, or out of range.
    """
    env = os.environ if env is None else env
    if path is None:
        path = Path(env.get("TICKSTREAM_CONFIG", str(DEFAULT_CONFIG_PATH)))
    data = _read_toml(path)
    for section, values in _env_overrides(env).items():
        current = data.setdefault(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"{section} must be a table")
        current.update(values)
    market = data.setdefault("market", {})
    if isinstance(market, dict) and not market.get("calendar_dir"):
        market["calendar_dir"] = str(path.parent / "calendar")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None
    secret = config.auth.jwt_secret
    if secret is not None and len(secret.reveal().encode()) < MIN_JWT_SECRET_BYTES:
        raise ConfigError(
            f"TICKSTREAM_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes long"
        )
    if config.stream.idle_timeout > config.server.read_timeout:
        # The listener drops a connection silent for read_timeout without a close frame.
        raise ConfigError("stream.idle_timeout must not exceed server.read_timeout")
    if config.auth.jwt_keys is not None:
        try:
            parse_key_lines(config.auth.jwt_keys.reveal())
        except ValueError as exc:
            raise ConfigError(f"TICKSTREAM_JWT_KEYS: {exc}") from None
    return with_tls(config)


def with_tls(config: Config) -> Config:
    """Return ``config`` with ``database.sslmode`` and ``redis.ssl_ca_certs`` folded into
    the DSN and the Redis URL, so every client (asyncpg, Alembic, redis-py) sees them."""
    db, redis = config.database, config.redis
    sections: dict[str, dict[str, Any]] = {}
    if db.sslmode and db.url is not None:
        sections["database"] = {"url": Secret(with_query(db.url.reveal(), sslmode=db.sslmode))}
    if redis.ssl_ca_certs and redis.url is not None:
        url = redis.url.reveal()
        if not url.startswith("rediss://"):
            raise ConfigError("redis.ssl_ca_certs needs a rediss:// TICKSTREAM_REDIS_URL")
        sections["redis"] = {"url": Secret(with_query(url, ssl_ca_certs=redis.ssl_ca_certs))}
    return with_overrides(config, **sections) if sections else config


def with_overrides(config: Config, **sections: Mapping[str, Any]) -> Config:
    """Return a copy of ``config`` with some keys of some sections replaced (tests, --demo)."""
    updates = {
        name: getattr(config, name).model_copy(update=dict(values))
        for name, values in sections.items()
    }
    return config.model_copy(update=updates)
