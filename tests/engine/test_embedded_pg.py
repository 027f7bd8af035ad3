"""The embedded PostgreSQL on real processes: lifecycle, orphans, stale postmasters."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import trio

from engine.embedded_pg import SYSTEM_USER, EmbeddedPostgres, EmbeddedPostgresError, wheel_bin_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OWNER_SCRIPT = Path(__file__).with_name("_embedded_owner.py")
BIN = wheel_bin_dir()
DEADLINE = 15.0  # seconds, for any one process to appear or go away


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh data directory the server's system user can reach."""
    if os.geteuid() != 0:
        yield tmp_path / "pg"
        return
    # As root the server runs as SYSTEM_USER, which cannot search pytest's 0700
    # basetemp; the adapter refuses to widen it, so use a private dir under /tmp.
    parent = Path(tempfile.mkdtemp(prefix="tickstream-pg-test-"))
    parent.chmod(0o755)
    try:
        yield parent / "pg"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def psql(dsn: str, sql: str) -> str:
    out = subprocess.run(
        [str(BIN / "psql"), "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )
    return out.stdout.strip()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def cluster_pids(data_dir: Path) -> list[int]:
    target = str((data_dir / "pgdata").resolve())
    pids = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "postgres" and proc.cwd() == target and not gone(proc.pid):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def start_owner(data_dir: Path) -> tuple[subprocess.Popen[str], int, str]:
    owner = subprocess.Popen(
        [sys.executable, str(OWNER_SCRIPT), str(data_dir)],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        stdout=subprocess.PIPE,
        text=True,
    )
    line = read_line(owner)
    tag, pid, dsn = line.split()
    assert tag == "READY", line
    return owner, int(pid), dsn


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
    if not ready:
        proc.kill()
        pytest.fail("owner process printed nothing")
    return proc.stdout.readline().strip()


def as_server_user() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    return {"user": SYSTEM_USER, "group": SYSTEM_USER, "extra_groups": []}


def test_start_serves_queries_and_stop_leaves_nothing_running(data_dir: Path) -> None:
    """start() returns a working DSN; stop() ends every server process and frees the port."""
    pg = EmbeddedPostgres(data_dir)
    dsn = pg.start()
    try:
        assert psql(dsn, "select current_database()") == "tickstream"
        pid, port = pg.pid, pg.port
        assert pid is not None
        assert port is not None
        assert cluster_pids(data_dir)
    finally:
        pg.stop()
    assert gone(pid)
    assert cluster_pids(data_dir) == []
    assert port_free(port)
    assert pg.pid is None
    assert pg.dsn is None
    pg.stop()  # idempotent
    assert "database system is shut down" in pg.log_path.read_text()


def test_restart_over_existing_data_dir_keeps_data(data_dir: Path) -> None:
    """A second start on the same directory skips initdb and sees earlier writes."""
    pg = EmbeddedPostgres(data_dir, database="app_db")
    dsn = pg.start()
    try:
        psql(dsn, "create table t (v text); insert into t values ('kept')")
    finally:
        pg.stop()
    dsn = pg.start()
    try:
        assert dsn.endswith("/app_db")
        assert psql(dsn, "select v from t") == "kept"
    finally:
        pg.stop()
    assert pg.log_path.read_text().count("creating subdirectories") == 1  # one initdb


def test_second_instance_on_same_data_dir_is_refused(data_dir: Path) -> None:
    """The directory lock refuses a second owner instead of stopping the first one's server."""
    first = EmbeddedPostgres(data_dir)
    dsn = first.start()
    try:
        with pytest.raises(EmbeddedPostgresError, match="in use"):
            EmbeddedPostgres(data_dir).start()
        assert psql(dsn, "select 1") == "1"
    finally:
        first.stop()


def test_server_outlives_the_thread_that_started_it(data_dir: Path) -> None:
    """The death signal is tied to the server's own reaper thread, not the caller's thread."""
    pg = EmbeddedPostgres(data_dir)
    # PR_SET_PDEATHSIG fires when the forking *thread* exits: a trio worker thread that
    # retires while idle must not take the server with it.
    starter = threading.Thread(target=pg.start)
    starter.start()
    starter.join(DEADLINE)
    try:
        dsn = pg.dsn
        assert dsn is not None
        time.sleep(0.3)  # absence of an event: a fast shutdown would be over by now
        assert psql(dsn, "select 1") == "1"
    finally:
        pg.stop()


async def test_run_reports_dsn_and_stops_server_when_cancelled(data_dir: Path) -> None:
    """run() hands its DSN to nursery.start and stops the server on cancellation."""
    pg = EmbeddedPostgres(data_dir)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            dsn = await nursery.start(pg.run)
            pid = pg.pid
            assert await trio.to_thread.run_sync(psql, dsn, "select 1") == "1"
            nursery.cancel_scope.cancel()
    assert pid is not None
    assert gone(pid)
    assert pg.pid is None


async def test_run_raises_when_postmaster_dies_and_next_start_recovers(data_dir: Path) -> None:
    """A postmaster killed under run() fails the service; the next start cleans up and works."""
    pg = EmbeddedPostgres(data_dir)
    with trio.fail_after(30):
        with pytest.RaisesGroup(pytest.RaisesExc(EmbeddedPostgresError, match="on its own")):
            async with trio.open_nursery() as nursery:
                dsn = await nursery.start(pg.run)
                await trio.to_thread.run_sync(psql, dsn, "create table t (v int)")
                assert pg.pid is not None
                os.kill(pg.pid, signal.SIGKILL)
        dsn = await trio.to_thread.run_sync(pg.start)
        try:
            assert await trio.to_thread.run_sync(psql, dsn, "select count(*) from t") == "0"
        finally:
            await trio.to_thread.run_sync(pg.stop)


def test_sigkill_of_owner_takes_postmaster_down(data_dir: Path) -> None:
    """The death signal stops the postmaster when its owner is SIGKILLed."""
    owner, pid, _ = start_owner(data_dir)
    owner.kill()
    owner.wait(DEADLINE)
    wait_until(lambda: gone(pid), "the orphaned postmaster exits")
    wait_until(lambda: not cluster_pids(data_dir), "every server process exits")
    assert "received fast shutdown request" in (data_dir / "postgres.log").read_text()


def test_sigterm_of_owner_stops_postmaster_cleanly(data_dir: Path) -> None:
    """SIGTERM to the owner stops the server through run() and the owner exits 0."""
    owner, pid, dsn = start_owner(data_dir)
    assert psql(dsn, "select 1") == "1"
    owner.terminate()
    assert read_line(owner) == "STOPPED"
    assert owner.wait(DEADLINE) == 0
    assert gone(pid)
    assert not cluster_pids(data_dir)
    assert "database system is shut down" in (data_dir / "postgres.log").read_text()


def test_stale_postmaster_started_by_pg_ctl_is_stopped_at_next_start(data_dir: Path) -> None:
    """A detached postmaster (pg_ctl, owner gone) is found through postmaster.pid and stopped."""
    pg = EmbeddedPostgres(data_dir)
    psql(pg.start(), "create table t (v text); insert into t values ('kept')")
    pg.stop()
    # As the wheels do: pg_ctl daemonises the postmaster and exits, so its owner is gone.
    pg_ctl = [str(BIN / "pg_ctl"), "-D", str(data_dir / "pgdata"), "-l", str(data_dir / "ctl.log")]
    pg_ctl += ["-o", f"-h 127.0.0.1 -p {free_port()} -k ''", "-w", "-t", "20", "start"]
    subprocess.run(
        pg_ctl,
        cwd=data_dir,
        capture_output=True,
        timeout=30,
        check=True,
        **as_server_user(),  # type: ignore[call-overload]
    )
    stale = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    assert psutil.Process(stale).ppid() != os.getpid()

    dsn = pg.start()
    try:
        assert gone(stale)
        assert pg.pid != stale
        assert psql(dsn, "select v from t") == "kept"
    finally:
        pg.stop()


def test_stale_pid_file_of_dead_process_is_removed(data_dir: Path) -> None:
    """A postmaster.pid naming a dead pid does not block the next start."""
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    pg.stop()
    # A reaped child's pid stays unused unless the pid space wraps within the test.
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_pid_file(data_dir, dead.pid)
    dsn = pg.start()
    try:
        assert psql(dsn, "select 1") == "1"
        assert (data_dir / "pgdata" / "postmaster.pid").read_text().split()[0] == str(pg.pid)
    finally:
        pg.stop()


def test_pid_file_naming_unrelated_live_process_is_removed_and_process_left_alone(
    data_dir: Path,
) -> None:
    """A reused pid in postmaster.pid is not taken for a postmaster, and is not signalled."""
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    pg.stop()
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        write_pid_file(data_dir, bystander.pid)
        dsn = pg.start()
        try:
            assert psql(dsn, "select 1") == "1"
            assert bystander.poll() is None
        finally:
            pg.stop()
    finally:
        bystander.kill()
        bystander.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_pid_file(data_dir: Path, pid: int) -> None:
    # The layout postgres writes: pid, data dir, start time, port, socket dir, host,
    # shared memory key, status.
    lines = [str(pid), str(data_dir / "pgdata"), "0", "5432", "", "127.0.0.1", "0 0", "ready"]
    (data_dir / "pgdata" / "postmaster.pid").write_text("\n".join(lines) + "\n")
