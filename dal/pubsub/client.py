"""Pub/Sub clients and resource names. The clients honour PUBSUB_EMULATOR_HOST by themselves."""

from __future__ import annotations

from typing import Any


def make_publisher() -> Any:
    from google.cloud import pubsub_v1

    # Publish each message at once: a job should not wait for a batch to fill.
    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1, max_latency=0.0)
    )


def make_subscriber() -> Any:
    from google.cloud import pubsub_v1

    return pubsub_v1.SubscriberClient()


def topic_path(project: str, topic: str) -> str:
    return f"projects/{project}/topics/{topic}"


def subscription_path(project: str, subscription: str) -> str:
    return f"projects/{project}/subscriptions/{subscription}"
