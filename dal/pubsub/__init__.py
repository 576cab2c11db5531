"""Pub/Sub adapters: the job queue (publish) and the dead-letter inspection used by replays."""

from dal.pubsub.dead_letters import DeadLetter, DeadLetterBox
from dal.pubsub.job_queue import PubSubJobQueue, job_message

__all__ = ["DeadLetter", "DeadLetterBox", "PubSubJobQueue", "job_message"]
