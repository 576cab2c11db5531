"""The gcloud Pub/Sub emulator: start it, and seed the topics and subscriptions the service uses.

Seeding mirrors production (terraform/): a jobs topic with a push subscription to the worker,
with a retry policy and a dead-letter policy; a dead-letter topic with a pull subscription that
keeps dead letters for the replay command and a push subscription that lets the worker mark
their jobs failed/dead_lettered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from emulators.process import (
    DEFAULT_STATE_DIR,
    Service,
    ServiceUnavailable,
    free_port,
    port_open,
    start_process,
    stop_service,
)

INSTALL_HINT = (
    "install the Google Cloud CLI with its Pub/Sub emulator "
    "(`gcloud components install pubsub-emulator beta`, or Debian's "
    "google-cloud-cli-pubsub-emulator) and Java 17+"
)


def start(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    project: str = "local-project",
    state_dir: Path = DEFAULT_STATE_DIR,
) -> Service:
    if port is not None and port_open(host, port):
        return Service(name="pubsub", host=host, port=port, pid=None)
    if shutil.which("gcloud") is None or shutil.which("java") is None:
        raise ServiceUnavailable(f"the Pub/Sub emulator needs gcloud and java: {INSTALL_HINT}")
    port = port or free_port(host)
    return start_process(
        "pubsub",
        [
            "gcloud",
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port={host}:{port}",
            f"--project={project}",
            "--quiet",
        ],
        host=host,
        port=port,
        state_dir=state_dir,
        timeout=90,
    )


def stop(service: Service) -> None:
    stop_service(service)


@dataclass(frozen=True)
class Topology:
    project: str
    topic: str = "jobs"
    push_subscription: str = "jobs-worker"
    dead_letter_topic: str = "jobs-dead-letter"
    dead_letter_subscription: str = "jobs-dead-letter"
    dead_letter_push_subscription: str = "jobs-dead-letter-recorder"
    max_delivery_attempts: int = 5
    ack_deadline_s: int = 600
    min_backoff_s: float = 10.0
    max_backoff_s: float = 600.0

    def prefixed(self, prefix: str) -> Topology:
        """The same topology with every topic and subscription name prefixed."""
        if not prefix:
            return self
        return dataclasses.replace(
            self,
            topic=prefix + self.topic,
            push_subscription=prefix + self.push_subscription,
            dead_letter_topic=prefix + self.dead_letter_topic,
            dead_letter_subscription=prefix + self.dead_letter_subscription,
            dead_letter_push_subscription=prefix + self.dead_letter_push_subscription,
        )


def seed(emulator_host: str, topology: Topology, *, worker_url: str) -> None:
    """Create (or recreate) the topics and subscriptions, pushing to `worker_url`."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1
    from google.protobuf import duration_pb2

    os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    t = topology
    topic = publisher.topic_path(t.project, t.topic)
    dead_topic = publisher.topic_path(t.project, t.dead_letter_topic)
    for path in (topic, dead_topic):
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(name=path)

    def duration(seconds: float) -> duration_pb2.Duration:
        return duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))

    subscriptions = [
        pubsub_v1.types.Subscription(
            name=subscriber.subscription_path(t.project, t.push_subscription),
            topic=topic,
            push_config=pubsub_v1.types.PushConfig(push_endpoint=f"{worker_url}/pubsub/push"),
            ack_deadline_seconds=t.ack_deadline_s,
            retry_policy=pubsub_v1.types.RetryPolicy(
                minimum_backoff=duration(t.min_backoff_s),
                maximum_backoff=duration(t.max_backoff_s),
            ),
            dead_letter_policy=pubsub_v1.types.DeadLetterPolicy(
                dead_letter_topic=dead_topic, max_delivery_attempts=t.max_delivery_attempts
            ),
        ),
        pubsub_v1.types.Subscription(
            name=subscriber.subscription_path(t.project, t.dead_letter_subscription),
            topic=dead_topic,
            ack_deadline_seconds=60,
            message_retention_duration=duration(7 * 24 * 3600),
        ),
        pubsub_v1.types.Subscription(
            name=subscriber.subscription_path(t.project, t.dead_letter_push_subscription),
            topic=dead_topic,
            push_config=pubsub_v1.types.PushConfig(
                push_endpoint=f"{worker_url}/pubsub/dead-letter"
            ),
            ack_deadline_seconds=60,
            retry_policy=pubsub_v1.types.RetryPolicy(
                minimum_backoff=duration(t.min_backoff_s),
                maximum_backoff=duration(t.max_backoff_s),
            ),
        ),
    ]
    for subscription in subscriptions:
        with contextlib.suppress(gexc.NotFound):
            subscriber.delete_subscription(subscription=subscription.name)
        subscriber.create_subscription(request=subscription)
    subscriber.close()
