"""Assemble the running engine: context, actors, supervisors (called by ``main``).

The supervision tree::

    root (rest_for_one, 3 restarts / 30 s)
     ├─ store      PostgreSQL pool
     ├─ bus        in-process or Redis
     ├─ ratelimit  shared token buckets (only with Redis)
     ├─ market     market actor (quotes, candles, chains)
     ├─ chains     option-chain snapshots (IV, Greeks, max pain, PCR) onto chain:, throttled
     ├─ accounts   account supervisor: one actor per account, quarantine past its budget
     ├─ strategies strategy actor: legs, live M2M and Greeks onto account:<id>:strategies
     ├─ stream     stream hub: bus events → one prepared frame → every subscriber's outbox
     ├─ feeds      feed supervisor (one_for_one, 5 / 60 s): simulator, redis stream, replay
     └─ gateway    hypercorn + quart-trio (HTTP, /ws/v1/*)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from actors.account.supervisor import Accounts
from actors.connection.hub import StreamHub
from actors.connection.snapshots import Snapshots
from actors.feed.redis_stream import RedisStreamFeed
from actors.feed.replay import ReplayFeed
from actors.feed.simulator import MarketSimulator, SimulatorFeed
from actors.market.actor import MarketActor
from actors.market.chain import ChainPublisher
from actors.market.instruments import InstrumentMaster
from actors.registry import Actors
from actors.strategy.actor import StrategyActor

from .bus import Bus, InProcessBus, RedisBus
from .calendar import load_calendar
from .config import Config, ConfigError
from .context import Engine, WallClock, system_clock_ms
from .gateway import Gateway
from .metrics import Metrics
from .ratelimit import Limiter, MemoryLimiter, RedisLimiter
from .store import Store
from .streams import RedisStreams
from .supervisor import ChildSpec, Restart, Strategy, Supervisor

LOG = logging.getLogger(__name__)

ROOT_INTENSITY: Final = 3
ROOT_PERIOD: Final = 30.0  # seconds
FEED_INTENSITY: Final = 5
FEED_PERIOD: Final = 60.0  # seconds
STORE_SHUTDOWN: Final = 6.0  # seconds; the pool's own close timeout is 5 s
SIMULATOR_BATCH: Final = 200  # ticks per simulator batch
REDIS_STREAM_BATCH: Final = 100  # stream entries per read


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything ``main`` starts and stops."""

    engine: Engine
    actors: Actors
    gateway: Gateway
    root: Supervisor


def make_bus(config: Config) -> Bus:
    """Return the Redis bus when ``TICKSTREAM_REDIS_URL`` is set, else the in-process one."""
    if config.redis.url is None:
        return InProcessBus()
    return RedisBus(config.redis, config.redis.url.reveal())


def _simulator_child(engine: Engine, market: MarketActor) -> ChildSpec:
    cfg = engine.config.feed

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sim = MarketSimulator(market.calendar, seed=cfg.simulator_seed, start_ms=engine.clock())
        await market.master.upsert(sim.instruments(), engine.clock())
        feed = SimulatorFeed(
            sim, market, rate=cfg.simulator_rate, batch=SIMULATOR_BATCH, clock=engine.clock
        )
        await feed.run(task_status=task_status)

    return ChildSpec("simulator", run, restart=Restart.PERMANENT, shutdown=2.0)


def _redis_stream_children(engine: Engine, market: MarketActor, url: str) -> list[ChildSpec]:
    cfg = engine.config.feed
    streams = RedisStreams(engine.config.redis, url, client_name=f"tickstream-{cfg.redis_consumer}")
    feed = RedisStreamFeed(
        streams,
        market,
        stream=cfg.redis_stream,
        group=cfg.redis_group,
        consumer=cfg.redis_consumer,
        batch=REDIS_STREAM_BATCH,
        clock=engine.clock,
    )
    return [
        ChildSpec("redis-streams", streams.run, restart=Restart.PERMANENT),
        ChildSpec("redis-stream-feed", feed.run, restart=Restart.PERMANENT),
    ]


def check_config(config: Config) -> None:
    """Refuse feed settings that cannot work together (before anything starts).

    Raises:
        ConfigError: naming the setting.
    """
    if config.feed.redis_stream and config.redis.url is None:
        raise ConfigError("feed.redis_stream needs TICKSTREAM_REDIS_URL")


def feed_children(engine: Engine, market: MarketActor) -> list[ChildSpec]:
    """Return the child specs of the configured feed sources.

    Raises:
        ConfigError: a Redis stream is configured without ``TICKSTREAM_REDIS_URL``.
    """
    check_config(engine.config)
    cfg = engine.config.feed
    children = []
    if cfg.simulator:
        children.append(_simulator_child(engine, market))
    if cfg.redis_stream and engine.config.redis.url is not None:
        children += _redis_stream_children(engine, market, engine.config.redis.url.reveal())
    if cfg.replay_path:
        replay = ReplayFeed(cfg.replay_path, market, speed=cfg.replay_speed, clock=engine.clock)
        # TRANSIENT: a replay that reached the end of its file is done, not crashed.
        children.append(ChildSpec("replay", replay.run, restart=Restart.TRANSIENT))
    return children


def build_runtime(config: Config, dsn: str, clock: WallClock = system_clock_ms) -> Runtime:
    """Build the engine context, its actors and the root supervisor (nothing runs yet)."""
    metrics = Metrics()
    store = Store(config.database, dsn)
    metrics.watch_pool(store.statistics)
    limiter: Limiter
    redis_limiter: RedisLimiter | None = None
    if config.redis.url is None:
        limiter = MemoryLimiter(trio.current_time)
    else:
        limiter = redis_limiter = RedisLimiter(config.redis.url.reveal())
    engine = Engine(
        config=config,
        store=store,
        bus=make_bus(config),
        metrics=metrics,
        clock=clock,
        limiter=limiter,
    )
    calendar = load_calendar(Path(config.market.calendar_dir))
    market = MarketActor(engine, InstrumentMaster(store), calendar)
    accounts = Accounts(engine, market)
    strategies = StrategyActor(engine, market)
    chains = ChainPublisher(engine, market)
    hub = StreamHub(engine, Snapshots(engine, market, accounts, strategies))
    actors = Actors(market=market, accounts=accounts, strategies=strategies, stream=hub)
    gateway = Gateway(engine, actors)
    feeds = Supervisor(
        "feeds",
        feed_children(engine, market),
        strategy=Strategy.ONE_FOR_ONE,
        intensity=FEED_INTENSITY,
        period=FEED_PERIOD,
        on_event=metrics.observe_supervisor,
    )
    root = Supervisor(
        "root",
        [
            ChildSpec("store", store.run, restart=Restart.PERMANENT, shutdown=STORE_SHUTDOWN),
            ChildSpec("bus", engine.bus.run, restart=Restart.PERMANENT),
            *(
                [ChildSpec("ratelimit", redis_limiter.run, restart=Restart.PERMANENT)]
                if redis_limiter is not None
                else []
            ),
            ChildSpec("market", market.run, restart=Restart.PERMANENT),
            ChildSpec("chains", chains.run, restart=Restart.PERMANENT),
            ChildSpec("accounts", accounts.run, restart=Restart.PERMANENT, shutdown=10.0),
            ChildSpec("strategies", strategies.run, restart=Restart.PERMANENT, shutdown=5.0),
            ChildSpec("stream", hub.run, restart=Restart.PERMANENT),
            feeds.as_child(),
            ChildSpec(
                "gateway",
                gateway.run,
                restart=Restart.PERMANENT,
                stop=gateway.stop,
                shutdown=config.server.graceful_timeout + 2,
            ),
        ],
        strategy=Strategy.REST_FOR_ONE,
        intensity=ROOT_INTENSITY,
        period=ROOT_PERIOD,
        on_event=metrics.observe_supervisor,
    )
    return Runtime(engine, actors, gateway, root)
