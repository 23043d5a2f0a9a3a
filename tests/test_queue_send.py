"""Sending a task never fails a request: a broker error is reported as not sent (the outbox sends it later), and
the embedded broker's race on creating a queue's row is tried once more."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError, OperationalError

from core.queue import TRAIN_TASK, send


class Broker:
    """Answers send_task with the given errors in turn, then takes the message."""

    def __init__(self, *errors: Exception) -> None:
        self.errors, self.sent = list(errors), []

    def send_task(self, name: str, args: list[str], **_: object) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append((name, args))


def _queue_row_race() -> IntegrityError:
    return IntegrityError("INSERT INTO kombu_queue (name) VALUES (?)", ("train",),
                          Exception("UNIQUE constraint failed: kombu_queue.name"))


def test_the_embedded_brokers_queue_creation_race_is_tried_again():
    broker = Broker(_queue_row_race())
    assert send(broker, TRAIN_TASK, "job1") is True and broker.sent == [(TRAIN_TASK, ["job1"])]


def test_a_broker_that_keeps_failing_is_reported_as_not_sent_instead_of_raising():
    assert send(Broker(_queue_row_race(), _queue_row_race()), TRAIN_TASK, "job1") is False
    assert send(Broker(OperationalError("select", (), Exception("database is locked"))), TRAIN_TASK, "job1") is False
    assert send(Broker(ConnectionRefusedError()), TRAIN_TASK, "job1") is False
