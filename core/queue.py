"""The Celery app both sides use: the api sends tasks by name, the worker registers them."""

from __future__ import annotations

import logging

from celery import Celery
from kombu import Queue
from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from core.settings import Settings

TRAIN_QUEUE, LIGHT_QUEUE, CPU_QUEUE = "train", "gpu-light", "cpu"
TRAIN_TASK = "lorabake.train_job"
GENERATE_TASK = "lorabake.generate"
SWEEP_TASK = "lorabake.sweep"
CONVERT_TASK = "lorabake.to_plain_lora"
RECONCILE_TASK = "lorabake.reconcile"
DATASET_TASK = "lorabake.dataset_task"
WEBHOOK_TASK = "lorabake.deliver_webhook"
SCREEN_TASK = "lorabake.screen"
log = logging.getLogger(__name__)


# A broker that is down answers within this: a request never hangs on it, and the outbox delivers later.
SEND_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


def send(app: Celery, task: str, object_id: str) -> bool:
    """Send one task by name; False (logged) when the broker cannot be reached: the caller has stored the row, and
    the reconciler's outbox sends it later. The embedded broker (kombu's SQLAlchemy transport) creates a queue's
    row on first use with a check-then-insert, so a worker and the API doing so at once make one of them fail with
    a unique-constraint error; the queue exists by then, and a second try goes through."""
    for last_try in (False, True):
        try:
            app.send_task(task, args=[object_id], retry=True, retry_policy=SEND_RETRY)
            return True
        except IntegrityError as exc:
            if last_try:
                log.warning("could not send %s for %s: %s", task, object_id, exc)
        except (KombuError, OSError, RedisError, SQLAlchemyError) as exc:
            log.warning("could not send %s for %s: %s", task, object_id, exc)
            return False
    return False


def make_celery(settings: Settings) -> Celery:
    app = Celery("lorabake", broker=settings.celery_broker)
    # Redis redelivers an unacked task after the visibility timeout: it must outlast the longest job. The embedded
    # SQLAlchemy transport hands these options to create_engine, so they are only set for Redis.
    redis = settings.celery_broker.startswith(("redis://", "rediss://"))
    transport = {"visibility_timeout": settings.visibility_timeout_s} if redis else {}
    app.conf.update(
        task_queues=[Queue(TRAIN_QUEUE), Queue(LIGHT_QUEUE), Queue(CPU_QUEUE)],
        task_default_queue=CPU_QUEUE,
        task_routes={TRAIN_TASK: {"queue": TRAIN_QUEUE}, GENERATE_TASK: {"queue": LIGHT_QUEUE},
                     SWEEP_TASK: {"queue": LIGHT_QUEUE}, CONVERT_TASK: {"queue": LIGHT_QUEUE},
                     RECONCILE_TASK: {"queue": CPU_QUEUE}, DATASET_TASK: {"queue": CPU_QUEUE},
                     WEBHOOK_TASK: {"queue": CPU_QUEUE}, SCREEN_TASK: {"queue": CPU_QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        beat_schedule={"reconcile": {"task": RECONCILE_TASK, "schedule": max(5.0, settings.heartbeat_s * 3)}},
    )
    return app


def declare_queues(app: Celery) -> None:
    """Every queue made on the broker once, before any worker starts. The embedded broker (kombu's SQLAlchemy
    transport) creates its tables and a queue's row with a check-then-insert on first use: two workers starting
    together can both insert, and the one that loses stops consuming."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in (TRAIN_QUEUE, LIGHT_QUEUE, CPU_QUEUE):
            channel.queue_declare(queue=queue)


def queue_lengths(app: Celery) -> dict[str, int | None]:
    """Messages waiting in each queue (None: the broker could not be asked). A queue nobody has sent to yet has
    nothing waiting."""
    lengths: dict[str, int | None] = {}
    try:
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            for queue in (TRAIN_QUEUE, LIGHT_QUEUE, CPU_QUEUE):
                try:
                    lengths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except Exception:  # noqa: BLE001 - kombu says "no such queue" differently per transport
                    lengths[queue] = 0
    except (KombuError, OSError, RedisError, SQLAlchemyError) as exc:
        log.warning("could not read the queue lengths: %s", exc)
        return dict.fromkeys((TRAIN_QUEUE, LIGHT_QUEUE, CPU_QUEUE))
    return lengths
