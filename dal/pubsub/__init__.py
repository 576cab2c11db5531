"""Pub/Sub adapters: the job message's codec, the job queue (publish) and the dead-letter
inspection used by replays."""

from dal.pubsub.dead_letters import DeadLetter, DeadLetterBox
from dal.pubsub.job_queue import PubSubJobQueue
from dal.pubsub.message import JobMessage, decode_job_id
from dal.pubsub.message import encode as job_message

__all__ = [
    "DeadLetter",
    "DeadLetterBox",
    "JobMessage",
    "PubSubJobQueue",
    "decode_job_id",
    "job_message",
]
