"""The store contract, run on SQLite and on the real PostgreSQL server: the single
release path, abandonment, bounded logs, views."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from peach_tasks.errors import Problem
from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
from peach_tasks.store import Store, StoreError
from peach_tasks.store.logs import LogWriter
from peach_tasks.store.store import HEAD_REVISION, TaskRegistration

SPEC = TaskSpec("default", "t", "t.ipynb", "m", executor=Executor.PYTHON, repo="algos",
                source_file="peach.yaml", source_line=3)


@pytest.fixture
def store(database_url: str) -> Store:
    s = Store.open(database_url)
    yield s
    s.close()


def test_run_lifecycle_and_counts(store: Store) -> None:
    store.register_tasks([TaskRegistration(SPEC, "abc1234")])
    statuses = [RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.TIMEOUT, RunStatus.SUCCESS]
    for status in statuses:
        run_id = store.start_run(SPEC, "abc1234", "f" * 40, "me")
        assert store.tasks()[0]["state"] == "RUNNING"
        store.finish_run(run_id, Outcome(status, error=None if status == RunStatus.SUCCESS else "boom",
                                         result={"n": 1}))
    [task] = store.tasks()
    assert task["state"] == "FINISHED" and task["last_status"] == "SUCCESS"
    assert task["successes"] == 2 and task["failures"] == 2
    assert task["defined_at"] == "peach.yaml:3"
    runs = store.runs("default", "t")
    assert [r["status"] for r in runs] == ["SUCCESS", "TIMEOUT", "FAILURE", "SUCCESS"]  # newest first
    assert runs[0]["result"] == {"n": 1} and runs[1]["error"] == "boom"
    assert runs[0]["started_at"].endswith("Z") and runs[0]["duration_s"] >= 0
    assert store.runs("default", "t", limit=2, before_id=runs[1]["id"])[0]["id"] == runs[2]["id"]


def test_finish_stores_what_the_run_used(store: Store) -> None:
    store.register_tasks([TaskRegistration(SPEC, "v")])
    measured = store.start_run(SPEC, "v", "c", "me")
    # Above 2**31: a BigInteger column, or a run of a few GiB would not fit.
    store.finish_run(measured, Outcome(RunStatus.SUCCESS, peak_memory_bytes=5 * 2**30 + 123,
                                       cpu_seconds=1.25))
    unmeasured = store.start_run(SPEC, "v", "c", "me")
    store.finish_run(unmeasured, Outcome(RunStatus.FAILURE, error="no cgroup here"))
    run = store.run(measured)
    assert run is not None
    assert (run["peak_memory_bytes"], run["cpu_seconds"]) == (5 * 2**30 + 123, 1.25)
    newest, older = store.runs("default", "t")
    assert (newest["peak_memory_bytes"], newest["cpu_seconds"]) == (None, None)  # not measured, not 0
    assert (older["peak_memory_bytes"], older["cpu_seconds"]) == (5 * 2**30 + 123, 1.25)
    [(logged, _piece)] = store.task_logs("default", "t", runs_limit=1)
    assert logged["id"] == unmeasured and "peak_memory_bytes" in logged


def test_finish_is_single_release_path(store: Store) -> None:
    store.register_tasks([TaskRegistration(SPEC, "v")])
    run_id = store.start_run(SPEC, "v", "c", "me")
    assert store.abandon_running("gone") == [run_id]
    store.finish_run(run_id, Outcome(RunStatus.SUCCESS))  # too late: must not overwrite
    run = store.run(run_id)
    assert run is not None and run["status"] == "ABANDONED" and run["error"] == "gone"
    assert store.tasks()[0]["state"] == "FINISHED"


def test_abandon_only_owner(store: Store) -> None:
    store.register_tasks([TaskRegistration(SPEC, "v")])
    mine = store.start_run(SPEC, "v", "c", "me")
    theirs = store.start_run(SPEC, "v", "c", "other")
    assert store.abandon_running("x", owner="me") == [mine]
    assert store.run(theirs)["status"] == "RUNNING"  # type: ignore[index]


def test_removed_task_keeps_history(store: Store) -> None:
    store.register_tasks([TaskRegistration(SPEC, "v")])
    store.finish_run(store.start_run(SPEC, "v", "c", "me"), Outcome(RunStatus.SUCCESS))
    store.register_tasks([])
    assert store.tasks() == []
    [gone] = store.tasks(include_inactive=True)
    assert gone["active"] is False and gone["successes"] == 1
    assert len(store.runs("default", "t")) == 1


def test_log_is_bounded_head_and_tail(store: Store) -> None:
    store.register_tasks([TaskRegistration(SPEC, "v")])
    run_id = store.start_run(SPEC, "v", "c", "me")
    writer = LogWriter(store, run_id, head_bytes=100, tail_bytes=300)
    for i in range(200):
        writer.write(f"line {i:04d}")  # 10 bytes + newline each
        if i % 7 == 0:
            writer.flush()
    writer.close()
    text = store.log(run_id)
    assert text is not None
    assert text.startswith("line 0000\n")
    assert text.endswith("line 0199\n")
    assert "bytes of this log were dropped" in text
    run = store.run(run_id)
    assert run["log_bytes"] == 200 * 10  # type: ignore[index]
    kept = len(text.encode()) - len(text.splitlines(keepends=True)[
        [i for i, line in enumerate(text.splitlines(keepends=True)) if "dropped" in line][0]])
    assert kept + run["log_dropped_bytes"] == 2000  # type: ignore[index]
    assert kept <= 100 + 300


def test_log_flusher_writes_while_running(store: Store) -> None:
    import time

    store.register_tasks([TaskRegistration(SPEC, "v")])
    run_id = store.start_run(SPEC, "v", "c", "me")
    writer = store.log_writer(run_id)
    writer.write("early line")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not store.log(run_id):
        time.sleep(0.05)
    assert store.log(run_id) == "early line\n"  # visible before the run ends
    writer.close()


def test_a_failed_log_write_keeps_its_lines_for_the_next(store: Store) -> None:
    store.register_tasks([TaskRegistration(SPEC, "v")])
    run_id = store.start_run(SPEC, "v", "c", "me")
    writer = LogWriter(store, run_id, head_bytes=100, tail_bytes=300)
    writer.write("first")
    writer.flush()
    writer.write("second")

    class Broken(Exception):
        pass

    # The run's finishing transaction fails after the log went into it: nothing of it stays.
    with pytest.raises(Broken):
        with store.engine.begin() as conn:
            writer.flush(conn=conn)
            raise Broken
    writer.undo()
    writer.write("third")
    store.finish_run(run_id, Outcome(RunStatus.SUCCESS), log=writer)
    assert store.log(run_id) == "first\nsecond\nthird\n"
    assert store.run(run_id)["log_bytes"] == len("first\nsecond\nthird\n")  # type: ignore[index]
    assert store.run(run_id)["status"] == "SUCCESS"  # type: ignore[index]


def test_finish_stores_the_log_even_of_an_abandoned_run(store: Store) -> None:
    store.register_tasks([TaskRegistration(SPEC, "v")])
    run_id = store.start_run(SPEC, "v", "c", "me")
    writer = store.log_writer(run_id)
    writer.write("was killed here")
    store.abandon_running("taken over")
    store.finish_run(run_id, Outcome(RunStatus.SUCCESS), log=writer)  # too late for the status
    assert store.run(run_id)["status"] == "ABANDONED"  # type: ignore[index]
    assert store.log(run_id) == "was killed here\n"


def test_problems_replace_per_scope(store: Store) -> None:
    store.set_problems("config", "algos", [Problem("config", "algos", "bad", "peach.yaml", 3)])
    store.set_problems("environment", "chrts", [Problem("environment", "chrts", "uv failed")], codops="chrts")
    assert len(store.problems()) == 2
    assert [p["message"] for p in store.problems(["default"])] == ["bad"]
    store.set_problems("config", "algos", [])
    assert [p["message"] for p in store.problems()] == ["uv failed"]


def test_problems_of_many_scopes_replaced_in_one_go(store: Store) -> None:
    store.set_problems("environment", "chrts", [Problem("environment", "chrts", "old")], codops="chrts")
    store.set_problems("environment", "sesr", [Problem("environment", "sesr", "stays")], codops="sesr")
    store.set_problems("config", "chrts", [Problem("config", "chrts", "other kind, same scope")])
    store.set_problems_many([
        ("environment", "chrts", [], "chrts"),  # fixed
        ("environment", "rtsr", [Problem("environment", "rtsr", "a", "req.txt", 1),
                                 Problem("environment", "rtsr", "b", "req.txt", 2)], "rtsr"),
    ])
    assert sorted(p["message"] for p in store.problems()) == ["a", "b", "other kind, same scope", "stays"]
    store.set_problems_many([])  # nothing to do
    assert len(store.problems()) == 4


def test_schema_check(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="peach-tasks db upgrade"):
        Store.open(f"sqlite:///{tmp_path / 'fresh.db'}", migrate=False)


def alembic(database_url: str, action: str, revision: str) -> None:
    """Run Alembic's ``upgrade`` or ``downgrade`` to ``revision``, as a deployed older version would have."""
    from alembic import command
    from alembic.config import Config

    from peach_tasks.store.store import MIGRATIONS

    engine = sa.create_engine(database_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)
    engine.dispose()


def test_out_of_date_schema_is_refused_not_changed(database_url: str) -> None:
    """serve/run-once/sync create the schema in an empty database but never upgrade an old one."""
    alembic(database_url, "upgrade", "0001")
    with pytest.raises(StoreError, match="peach-tasks db upgrade"):
        Store.open(database_url, migrate="fresh")
    upgraded = Store.open(database_url, migrate=True)  # what 'peach-tasks db upgrade' does
    assert upgraded.schema_revision() == HEAD_REVISION
    upgraded.close()
    Store.open(database_url, migrate="fresh").close()  # now current: accepted as it is


def test_upgrade_to_0005_keeps_the_runs_of_0004(database_url: str) -> None:
    """Runs recorded before usage was measured stay, with no usage (None, not 0)."""
    alembic(database_url, "upgrade", "0004")
    engine = sa.create_engine(database_url)
    # The columns 0004 has: written as the previous version of peach-tasks wrote them.
    old_run = dict(codops="default", task="t", loop="default", executor="python", version="v1",
                   started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), status="SUCCESS",
                   duration_s=1.5, exit_code=0, owner="old")
    with engine.begin() as conn:
        conn.execute(sa.table("runs", *[sa.column(k) for k in old_run]).insert().values(**old_run))
    engine.dispose()

    store = Store.open(database_url, migrate=True)  # 'peach-tasks db upgrade'
    try:
        assert store.schema_revision() == HEAD_REVISION
        [kept] = store.runs("default", "t")
        assert (kept["status"], kept["version"], kept["duration_s"], kept["owner"]) == ("SUCCESS", "v1", 1.5, "old")
        assert (kept["peak_memory_bytes"], kept["cpu_seconds"]) == (None, None)
        store.register_tasks([TaskRegistration(SPEC, "v2")])
        new_id = store.start_run(SPEC, "v2", "c", "me")
        store.finish_run(new_id, Outcome(RunStatus.SUCCESS, peak_memory_bytes=222_298_112, cpu_seconds=1.3))
        assert store.run(new_id)["peak_memory_bytes"] == 222_298_112  # type: ignore[index]
    finally:
        store.close()

    alembic(database_url, "downgrade", "0004")  # and back: the runs stay, without their usage
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from runs")).scalar() == 2
        assert "peak_memory_bytes" not in {c["name"] for c in sa.inspect(conn).get_columns("runs")}
    engine.dispose()


def test_upgrade_to_0006_scopes_trigger_request_ids_to_the_organisation(database_url: str) -> None:
    """0005 kept request_id unique across organisations; 0006 keeps the triggers and scopes the key."""
    from peach_tasks.scheduling.triggers import TriggerRefused, request_trigger

    alembic(database_url, "upgrade", "0005")
    engine = sa.create_engine(database_url)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    old = dict(request_id="nightly", codops="beta", task="t", payload='{"n": 1}', requested_by="old",
               state="PENDING", attempts=0, created_at=at, updated_at=at)
    with engine.begin() as conn:
        conn.execute(sa.table("triggers", *[sa.column(k) for k in old]).insert().values(**old))
    engine.dispose()

    store = Store.open(database_url, migrate=True)
    try:
        assert store.schema_revision() == HEAD_REVISION
        store.register_tasks([TaskRegistration(SPEC, "v"), TaskRegistration(TaskSpec(
            "default", "u", "t.ipynb", "m", executor=Executor.PYTHON), "v")])
        ours = request_trigger(store, "default", "t", requested_by="test", request_id="nightly")
        assert (ours["codops"], ours["payload"]) == ("default", None)
        assert request_trigger(store, "default", "t", requested_by="test", request_id="nightly")["id"] == ours["id"]
        with pytest.raises(TriggerRefused, match="already used for default/t"):
            request_trigger(store, "default", "u", requested_by="test", request_id="nightly")
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("select codops, payload from triggers order by id")).all()
        assert [tuple(r) for r in rows] == [("beta", '{"n": 1}'), ("default", None)]
        with pytest.raises(sa.exc.IntegrityError):  # the database holds the key, not only the code
            with store.engine.begin() as conn:
                conn.execute(sa.text("insert into triggers (request_id, codops, task, requested_by, state, "
                                     "attempts, created_at, updated_at) select request_id, codops, 'u', "
                                     "requested_by, state, attempts, created_at, updated_at from triggers "
                                     "where codops = 'default'"))
        with store.engine.begin() as conn:
            conn.execute(sa.text("delete from triggers where codops = 'default'"))
    finally:
        store.close()

    alembic(database_url, "downgrade", "0005")  # and back: the trigger stays
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select request_id, codops from triggers")).all() == [("nightly", "beta")]
    engine.dispose()


def test_upgrade_to_0007_makes_every_earlier_run_a_first_attempt(database_url: str) -> None:
    alembic(database_url, "upgrade", "0006")
    engine = sa.create_engine(database_url)
    old_run = dict(codops="default", task="t", loop="default", executor="python", version="v1",
                   started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), status="FAILURE", owner="old")
    with engine.begin() as conn:
        conn.execute(sa.table("runs", *[sa.column(k) for k in old_run]).insert().values(**old_run))
    engine.dispose()
    store = Store.open(database_url, migrate=True)
    try:
        [kept] = store.runs("default", "t")
        assert (kept["attempt"], kept["retry_of"]) == (1, None)
        store.register_tasks([TaskRegistration(SPEC, "v2")])
        retry = store.start_run(SPEC, "v2", "c", "me", retry_of=kept["id"], attempt=2)
        assert (store.run(retry)["attempt"], store.run(retry)["retry_of"]) == (2, kept["id"])  # type: ignore[index]
    finally:
        store.close()
    alembic(database_url, "downgrade", "0009")  # and back: the runs stay
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from runs")).scalar() == 2
    engine.dispose()


def test_replicas_registering_the_same_new_tasks_at_once(database_url: str) -> None:
    """Replicas start together on an empty database: both register every task, none fails."""
    import threading

    stores = [Store.open(database_url) for _ in range(4)]
    specs = [TaskRegistration(TaskSpec("org", f"t{i}", "t.ipynb", "m", executor=Executor.PYTHON), "v")
             for i in range(30)]
    barrier, errors = threading.Barrier(len(stores)), []

    def register(store: Store) -> None:
        barrier.wait()
        try:
            store.register_tasks(specs)
        except Exception as exc:  # the failure this test guards against
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert len(stores[0].tasks(["org"])) == 30
    finally:
        for s in stores:
            s.close()


def test_upgrade_to_0011_gives_every_task_the_base_environment(database_url: str) -> None:
    """Tasks registered before named environments ran in the organisation's one environment."""
    alembic(database_url, "upgrade", "0010")
    engine = sa.create_engine(database_url)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    old = dict(codops="default", name="old", loop="default", executor="python", state="FINISHED", active=True,
               repo="r", notebook="nb.ipynb", source_file="peach.yaml", updated_at=at)
    with engine.begin() as conn:
        conn.execute(sa.table("tasks", *[sa.column(k) for k in old]).insert().values(**old))
    engine.dispose()
    store = Store.open(database_url, migrate=True)
    try:
        assert store.schema_revision() == HEAD_REVISION
        store.register_tasks([TaskRegistration(TaskSpec("default", "ml", "t.ipynb", "m", environment="ml"), "v")])
        environments = {t["name"]: t["environment"] for t in store.tasks(include_inactive=True)}
        assert environments == {"old": "base", "ml": "ml"}
    finally:
        store.close()
    alembic(database_url, "downgrade", "0010")
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert "environment" not in {c["name"] for c in sa.inspect(conn).get_columns("tasks")}
    engine.dispose()


def test_upgrade_to_0012_gives_registered_tasks_their_details_at_the_next_sync(database_url: str) -> None:
    """Tasks registered before 0012 have no method, timeout or dependencies until registered again."""
    alembic(database_url, "upgrade", "0011")
    engine = sa.create_engine(database_url)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    old = dict(codops=SPEC.codops, name=SPEC.name, loop=SPEC.loop_name, executor=SPEC.executor.value,
               state="FINISHED", active=True, repo="r", notebook=SPEC.notebook, source_file="peach.yaml",
               updated_at=at)
    with engine.begin() as conn:
        conn.execute(sa.table("tasks", *[sa.column(k) for k in old]).insert().values(**old))
    engine.dispose()
    store = Store.open(database_url, migrate=True)
    try:
        [before] = store.tasks()
        assert (before["method"], before["timeout_s"], before["dependencies"]) == (None, None, None)
        detailed = TaskSpec(SPEC.codops, SPEC.name, SPEC.notebook, "entry", executor=Executor.PYTHON,
                            timeout=90.0, dependencies=("six",), repo="r", source_file="peach.yaml", source_line=4)
        store.register_tasks([TaskRegistration(detailed, "v")])
        [after] = store.tasks()
        assert (after["method"], after["timeout_s"], after["dependencies"], after["defined_at"]) == \
            ("entry", 90.0, ["six"], "peach.yaml:4")
    finally:
        store.close()
    alembic(database_url, "downgrade", "0011")
