"""Celery on Redis as the job queue (JOB_QUEUE=celery, the `selfhosted` profile): the app's
configuration, the queue the API publishes to, the dead-letter list and the delivery counter.

Nothing here imports the worker's task code or torch: the API sends tasks by name.
"""

from dal.celery.app import TASK_NAME, broker_url, dead_letter_redis_url, make_celery_app
from dal.celery.dead_letters import CeleryDeadLetter, CeleryDeadLetterBox
from dal.celery.deliveries import DeliveryCounter
from dal.celery.job_queue import CeleryJobQueue, retry_countdown

__all__ = [
    "TASK_NAME",
    "CeleryDeadLetter",
    "CeleryDeadLetterBox",
    "CeleryJobQueue",
    "DeliveryCounter",
    "broker_url",
    "dead_letter_redis_url",
    "make_celery_app",
    "retry_countdown",
]
