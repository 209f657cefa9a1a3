"""A run's outputs in the store, on SQLite and PostgreSQL alike (the store's contract)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from test_store import SPEC, alembic

from peach_tasks.model import Outcome, RunOutput, RunStatus
from peach_tasks.store import Store
from peach_tasks.store.store import HEAD_REVISION, TaskRegistration

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # every byte value: binary must come back as it went


@pytest.fixture
def store(database_url: str) -> Store:
    opened = Store.open(database_url)
    opened.register_tasks([TaskRegistration(SPEC, "v1")])
    yield opened
    opened.close()


def test_outputs_are_kept_with_a_failed_run_in_order(store: Store) -> None:
    run_id = store.start_run(SPEC, "v1", "c", "me")
    assert store.run_outputs(run_id) == []  # none while it runs: they come with its end
    shown = (RunOutput(1, "display", "text/html", b"<table><tr><td>1</td></tr></table>", "   a\n0  1"),
             RunOutput(2, "figure", "image/png", PNG, "<Figure size 640x480 with 1 Axes>"),
             RunOutput(3, "note", "text/plain", b"not kept: 2 outputs", "not kept: 2 outputs"))
    store.finish_run(run_id, Outcome(RunStatus.FAILURE, error="ValueError: boom", outputs=shown))
    listed = store.run_outputs(run_id)
    assert [(o["seq"], o["kind"], o["mime_type"], o["size_bytes"]) for o in listed] == [
        (1, "display", "text/html", 34), (2, "figure", "image/png", len(PNG)), (3, "note", "text/plain", 19)]
    assert listed[0]["text"] == "   a\n0  1"
    assert store.run_output(run_id, 2) == ("image/png", PNG)
    assert store.run_output(run_id, 1) == ("text/html", b"<table><tr><td>1</td></tr></table>")
    assert store.run_output(run_id, 4) is None and store.run_output(run_id + 1, 1) is None
    assert store.run(run_id)["status"] == "FAILURE"  # type: ignore[index]


def test_a_second_end_of_a_run_adds_no_outputs(store: Store) -> None:
    """An abandoned run's successor may try to end it again: the first end and its outputs stand."""
    run_id = store.start_run(SPEC, "v1", "c", "me")
    store.finish_run(run_id, Outcome(RunStatus.TIMEOUT, outputs=(RunOutput(1, "display", "text/plain", b"a"),)))
    store.finish_run(run_id, Outcome(RunStatus.ABANDONED, outputs=(RunOutput(1, "display", "text/plain", b"b"),)))
    assert [o["text"] for o in store.run_outputs(run_id)] == [None]
    assert store.run_output(run_id, 1) == ("text/plain", b"a")


def test_text_a_database_cannot_hold_is_cleaned(store: Store) -> None:
    run_id = store.start_run(SPEC, "v1", "c", "me")
    store.finish_run(run_id, Outcome(RunStatus.SUCCESS, outputs=(
        RunOutput(1, "display", "text/plain", b"\x00x", "a\x00b" + "z" * 5000),)))
    [listed] = store.run_outputs(run_id)
    assert listed["text"] == "a\ufffdb" + "z" * 1997 and store.run_output(run_id, 1) == ("text/plain", b"\x00x")


def test_upgrade_to_0009_adds_outputs_and_downgrade_removes_them(database_url: str) -> None:
    alembic(database_url, "upgrade", "0008")
    store = Store.open(database_url, migrate=True)
    try:
        assert store.schema_revision() == HEAD_REVISION
        store.register_tasks([TaskRegistration(SPEC, "v1")])
        run_id = store.start_run(SPEC, "v1", "c", "me")
        store.finish_run(run_id, Outcome(RunStatus.SUCCESS, outputs=(RunOutput(1, "figure", "image/png", PNG),)))
        assert store.run_output(run_id, 1) == ("image/png", PNG)
    finally:
        store.close()
    alembic(database_url, "downgrade", "0008")
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("run_outputs")
        assert conn.execute(sa.text("select count(*) from runs")).scalar() == 1
    engine.dispose()
