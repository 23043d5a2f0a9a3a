"""The light task rows move through core/tasks.py alone: queued → running → succeeded | failed, each step a
conditional UPDATE, so a redelivered message neither restarts an ended task nor ends it twice."""

from __future__ import annotations

import pytest

from core import tasks
from core.db import migrate, session_factory
from core.models import Dataset, DatasetTask, TaskStatus, User


@pytest.fixture
def task_id(db_url) -> tuple:
    migrate(db_url)
    factory = session_factory(db_url)
    with factory() as session:
        user = User(email="tasks@example.com", password_hash="x")
        session.add(user)
        session.flush()
        dataset = Dataset(owner_id=user.id, name="d")
        session.add(dataset)
        session.flush()
        task = DatasetTask(owner_id=user.id, dataset_id=dataset.id, kind="autotag", params={}, result={})
        session.add(task)
        session.commit()
        return factory, task.id


def _row(factory, task_id: str) -> DatasetTask:  # noqa: ANN001
    with factory() as session:
        return session.get(DatasetTask, task_id)


def test_a_task_runs_ends_once_and_is_not_restarted_by_a_second_delivery(task_id):
    factory, row_id = task_id
    with factory() as session:
        assert tasks.start(session, DatasetTask, row_id, total=3, done=0)
        assert tasks.start(session, DatasetTask, row_id, total=3, done=0)  # a worker taking over a redelivery
        session.commit()
    assert _row(factory, row_id).status == TaskStatus.running and _row(factory, row_id).total == 3
    with factory() as session:
        assert tasks.finish(session, DatasetTask, row_id, TaskStatus.succeeded, result={"tagged": 3})
        assert not tasks.finish(session, DatasetTask, row_id, TaskStatus.failed, error="late")  # ended already
        assert not tasks.start(session, DatasetTask, row_id)  # a redelivered message finds it ended
        session.commit()
    ended = _row(factory, row_id)
    assert (ended.status, ended.result, ended.error) == (TaskStatus.succeeded, {"tagged": 3}, None)
    assert ended.finished_at is not None


def test_an_unsent_task_fails_with_the_reason_and_only_while_queued(task_id):
    factory, row_id = task_id
    with factory() as session:
        assert tasks.unsent(session, DatasetTask, row_id, "the queue is down")
        assert not tasks.start(session, DatasetTask, row_id)
        session.commit()
    assert (_row(factory, row_id).status, _row(factory, row_id).error) == (TaskStatus.failed, "the queue is down")
    with factory() as session, pytest.raises(ValueError, match="succeeded or failed"):
        tasks.finish(session, DatasetTask, row_id, TaskStatus.running)


def test_nothing_outside_core_tasks_sets_a_task_rows_status():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"^\s*(task|generation|sweep|conversion|row)\.status\s*(,\s*[\w.]+\s*)*=(?!=)")
    offenders = [f"{path.relative_to(root)}:{n}" for folder in ("api", "worker", "core")
                 for path in (root / folder).rglob("*.py") if path.name != "tasks.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
