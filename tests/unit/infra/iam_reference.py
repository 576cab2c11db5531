"""What Google Cloud asks for, copied from its documentation, for tests/unit/infra/
test_iam_matrix.py: the permissions each Terraform resource type needs from whoever applies it,
the permissions each client-library call needs from the process that makes it, and the
permissions each predefined role the Terraform grants includes (only those the matrix checks).

Everything here is Google's word, not this project's: when Google renames a permission or
changes a role, this file changes, and the matrix says which grant no longer covers what.
"""

from __future__ import annotations

from collections.abc import Iterable


def _verbs(collection: str, verbs: Iterable[str]) -> frozenset[str]:
    return frozenset(f"{collection}.{verb}" for verb in verbs)


def _crud(collection: str) -> frozenset[str]:
    # Terraform reads every resource on each plan and updates it in place where it can.
    return _verbs(collection, ("create", "get", "update", "delete"))


def _iam_policy(collection: str) -> frozenset[str]:
    # A *_iam_member resource reads the resource's policy, adds one binding and writes it back.
    return _verbs(collection, ("getIamPolicy", "setIamPolicy"))


# --- Terraform resource types: what applying them takes --------------------------------------
#
# Each type's API methods (create, get, patch, delete; getIamPolicy/setIamPolicy for the
# *_iam_member types) and the permission each method checks, from the REST references and
# https://cloud.google.com/iam/docs/permissions-reference. Attaching a service account to a
# resource (a Cloud Run revision, a push subscription, a node pool) also takes
# iam.serviceAccounts.actAs on that account: the matrix checks that per account, not here.
RESOURCE_PERMISSIONS: dict[str, frozenset[str]] = {
    "google_artifact_registry_repository": _crud("artifactregistry.repositories"),
    "google_artifact_registry_repository_iam_member": _iam_policy("artifactregistry.repositories"),
    "google_cloud_run_v2_job": _crud("run.jobs"),
    "google_cloud_run_v2_job_iam_member": _iam_policy("run.jobs"),
    "google_cloud_run_v2_service": _crud("run.services"),
    "google_cloud_run_v2_service_iam_member": _iam_policy("run.services"),
    "google_cloud_scheduler_job": _crud("cloudscheduler.jobs"),
    # firewalls.insert/patch also check networks.updatePolicy on the rule's network.
    "google_compute_firewall": _crud("compute.firewalls") | {"compute.networks.updatePolicy"},
    # A private services access range is an INTERNAL address: *Internal on top of create.
    "google_compute_global_address": _verbs(
        "compute.globalAddresses", ("create", "createInternal", "get", "delete", "deleteInternal")
    ),
    "google_compute_network": _verbs("compute.networks", ("create", "get", "delete")),
    "google_compute_router": _crud("compute.routers"),
    # A NAT is a part of its router: routers.patch.
    "google_compute_router_nat": _verbs("compute.routers", ("get", "update")),
    "google_compute_subnetwork": _crud("compute.subnetworks"),
    "google_container_cluster": _crud("container.clusters"),
    # Node pools have no permissions of their own: their methods check clusters.update.
    "google_container_node_pool": _verbs("container.clusters", ("get", "update")),
    "google_firestore_database": _crud("datastore.databases"),
    # Indexes and field overrides: datastore.schemas.* (formerly datastore.indexes.*,
    # https://cloud.google.com/firestore/docs/security/iam).
    "google_firestore_field": _verbs("datastore.schemas", ("get", "update")),
    "google_firestore_index": _verbs("datastore.schemas", ("create", "get", "delete")),
    "google_project": frozenset({"resourcemanager.projects.get"}),
    "google_project_iam_member": _iam_policy("resourcemanager.projects"),
    # enable_on_create; the module keeps APIs enabled on destroy (disable_on_destroy = false).
    "google_project_service": _verbs("serviceusage.services", ("enable", "get", "list")),
    # services.generateServiceIdentity (v1beta1) names no IAM permission in Google's reference
    # (https://cloud.google.com/service-usage/docs/reference/rest/v1beta1/services/generateServiceIdentity).
    "google_project_service_identity": frozenset(),
    "google_pubsub_subscription": _crud("pubsub.subscriptions")
    | {"pubsub.topics.attachSubscription"},
    "google_pubsub_subscription_iam_member": _iam_policy("pubsub.subscriptions"),
    "google_pubsub_topic": _crud("pubsub.topics"),
    "google_pubsub_topic_iam_member": _iam_policy("pubsub.topics"),
    # Terraform reads the instance's AUTH string (auth_enabled) into the REDIS_URL secret.
    "google_redis_instance": _crud("redis.instances") | {"redis.instances.getAuthString"},
    "google_secret_manager_secret": _crud("secretmanager.secrets"),
    "google_secret_manager_secret_iam_member": _iam_policy("secretmanager.secrets"),
    # Terraform reads a version's payload back (versions.access) to detect drift.
    "google_secret_manager_secret_version": _verbs(
        "secretmanager.versions", ("add", "get", "access", "destroy")
    ),
    "google_service_account": _crud("iam.serviceAccounts"),
    "google_service_account_iam_member": _iam_policy("iam.serviceAccounts"),
    "google_service_networking_connection": frozenset(
        {
            "servicenetworking.services.addPeering",
            "servicenetworking.services.get",
            "servicenetworking.services.deleteConnection",
            "compute.networks.addPeering",
            "compute.networks.removePeering",
            "compute.networks.get",
        }
    ),
    "google_sql_database": _crud("cloudsql.databases"),
    "google_sql_database_instance": _crud("cloudsql.instances"),
    "google_sql_user": _verbs("cloudsql.users", ("create", "list", "update", "delete")),
    "google_storage_bucket": _crud("storage.buckets"),
    "google_storage_bucket_iam_member": _iam_policy("storage.buckets"),
    # Made by the provider, no Google API.
    "random_password": frozenset(),
    # The environment's state, read from its GCS backend bucket.
    "terraform_remote_state": frozenset({"storage.objects.get", "storage.objects.list"}),
}


# --- client-library calls: what a process needs to make them ----------------------------------
#
# Import-name prefixes of the Google client libraries that call Google APIs, and the packages of
# this project that hold their adapters (a module of dal.pubsub handles the Pub/Sub clients it
# is handed without importing the library).
CLIENT_LIBRARIES: dict[str, str] = {
    "google.cloud.storage": "storage",
    "dal.gcs": "storage",
    "google.cloud.firestore": "firestore",
    "google.cloud.firestore_v1": "firestore",
    "dal.firestore": "firestore",
    "google.cloud.pubsub": "pubsub",
    "google.cloud.pubsub_v1": "pubsub",
    "google.pubsub_v1": "pubsub",
    "dal.pubsub": "pubsub",
}
# Google packages the code imports that call no Google Cloud API with the process's identity:
# exceptions and retry helpers, credentials (the metadata server), ID-token verification
# against Google's public certificates, local service-account keys.
NOT_API_CLIENTS = ("google.api_core", "google.auth", "google.oauth2", "google.protobuf")

# The classes whose methods count as calls of each library: a reached use of any of their
# public method names must be in LIBRARY_CALLS (with an empty set when it sends no request).
LIBRARY_CLASSES: dict[str, tuple[str, ...]] = {
    "storage": (
        "google.cloud.storage:Client",
        "google.cloud.storage:Bucket",
        "google.cloud.storage:Blob",
    ),
    "firestore": (
        "google.cloud.firestore:Client",
        "google.cloud.firestore_v1:DocumentReference",
        "google.cloud.firestore_v1:CollectionReference",
        "google.cloud.firestore_v1:Query",
        "google.cloud.firestore_v1:Transaction",
        "google.cloud.firestore_v1:WriteBatch",
        "google.cloud.firestore_v1:DocumentSnapshot",
        "google.cloud.firestore_v1.services.firestore:FirestoreClient",
    ),
    "pubsub": (
        "google.cloud.pubsub_v1:PublisherClient",
        "google.cloud.pubsub_v1:SubscriberClient",
        "google.cloud.pubsub_v1.subscriber.message:Message",
    ),
}

# Methods no other object of this code base has: a call of one is the library's wherever it
# is made, in an adapter or not (a module handed a Blob can sign a URL with it).
DISTINCTIVE_CALLS: dict[str, str] = {
    "generate_signed_url": "storage",
    "upload_from_string": "storage",
    "upload_from_file": "storage",
    "upload_from_filename": "storage",
    "download_as_bytes": "storage",
    "download_as_text": "storage",
    "download_to_filename": "storage",
    "list_blobs": "storage",
}

_OBJECT_READ = frozenset({"storage.objects.get"})
_ENTITY_READ = frozenset({"datastore.entities.get", "datastore.entities.list"})
_CONSUME = frozenset({"pubsub.subscriptions.consume"})

# Library method -> the permissions of the API methods it calls.
# Cloud Storage: https://cloud.google.com/storage/docs/access-control/iam-json
# Firestore: https://cloud.google.com/firestore/docs/security/iam (required permissions for
#   API methods: batchGet/get need entities.get, runQuery and aggregations entities.list,
#   beginTransaction and rollback databases.get, commit the permission of each write it holds)
# Pub/Sub: https://cloud.google.com/pubsub/docs/access-control
LIBRARY_CALLS: dict[str, dict[str, frozenset[str]]] = {
    "storage": {
        "blob": frozenset(),
        "bucket": frozenset(),
        # Signs locally with a key, or through IAM (SIGNS_THROUGH_IAM).
        "generate_signed_url": frozenset(),
        # objects.insert; one that replaces an existing object (a retried upload) also checks
        # objects.delete.
        "upload_from_string": frozenset({"storage.objects.create", "storage.objects.delete"}),
        "upload_from_file": frozenset({"storage.objects.create", "storage.objects.delete"}),
        "upload_from_filename": frozenset({"storage.objects.create", "storage.objects.delete"}),
        "download_as_bytes": _OBJECT_READ,
        "download_as_text": _OBJECT_READ,
        "download_to_filename": _OBJECT_READ,
        "exists": _OBJECT_READ,
        "reload": _OBJECT_READ,
        "delete": frozenset({"storage.objects.delete"}),
        "list_blobs": frozenset({"storage.objects.list"}),
    },
    "firestore": {
        "batch": frozenset(),
        "collection": frozenset(),
        "document": frozenset(),
        "limit": frozenset(),
        "order_by": frozenset(),
        "start_after": frozenset(),
        "where": frozenset(),
        "to_dict": frozenset(),
        "write_option": frozenset(),
        "transaction": frozenset(),
        # The writes a commit carries are counted where they are added (set, create, ...).
        "commit": frozenset(),
        "get": _ENTITY_READ,
        "get_document": frozenset({"datastore.entities.get"}),
        "stream": _ENTITY_READ,
        "count": frozenset({"datastore.entities.list"}),
        "sum": frozenset({"datastore.entities.list"}),
        "add": frozenset({"datastore.entities.create"}),
        "create": frozenset({"datastore.entities.create"}),
        "set": frozenset({"datastore.entities.create", "datastore.entities.update"}),
        "update": frozenset({"datastore.entities.update"}),
        "delete": frozenset({"datastore.entities.delete"}),
        "begin_transaction": frozenset({"datastore.databases.get"}),
        "rollback": frozenset({"datastore.databases.get"}),
    },
    "pubsub": {
        "publish": frozenset({"pubsub.topics.publish"}),
        "subscribe": _CONSUME,
        "pull": _CONSUME,
        "acknowledge": _CONSUME,
        "modify_ack_deadline": _CONSUME,
        "ack": _CONSUME,
        "nack": _CONSUME,
        "close": frozenset(),
        "stop": frozenset(),
    },
}

# generate_signed_url(service_account_email=..., access_token=...) has Google sign the URL
# through the IAM Credentials signBlob method, which "requires the iam.serviceAccounts.signBlob
# permission on the specified resource name" (the signing account):
# https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/signBlob
# The URL then acts with the signing account's own access to the object
# (https://cloud.google.com/storage/docs/access-control/signed-urls).
SIGNS_THROUGH_IAM = (
    "storage",
    "generate_signed_url",
    frozenset({"service_account_email", "access_token"}),
)
SIGN_BLOB = "iam.serviceAccounts.signBlob"

# Which resource a permission applies to, by prefix, and the settings (by suffix) that name
# such resources; datastore permissions apply to the project (Firestore has no finer IAM).
SCOPED_BY_SETTING: dict[str, str] = {
    "storage.objects.": "_bucket",
    "pubsub.topics.": "_topic",
    "pubsub.subscriptions.": "_subscription",
}
PROJECT_WIDE = ("datastore.",)


# --- predefined roles: the permissions they include ---------------------------------------------
#
# Only the permissions the matrix checks, copied from Google's roles reference,
# https://cloud.google.com/iam/docs/roles-permissions/SERVICE (SERVICE: artifactregistry,
# cloudscheduler, cloudsql, compute, container, firestore, iam, logging, monitoring, pubsub,
# redis, resourcemanager, run, secretmanager, servicenetworking, serviceusage, storage).
# An empty set: a role granted for something the matrix does not derive (logs, metrics, traces).
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/artifactregistry.admin": frozenset(
        {
            "artifactregistry.repositories.create",
            "artifactregistry.repositories.delete",
            "artifactregistry.repositories.get",
            "artifactregistry.repositories.getIamPolicy",
            "artifactregistry.repositories.setIamPolicy",
            "artifactregistry.repositories.update",
            "resourcemanager.projects.get",
        }
    ),
    "roles/artifactregistry.writer": frozenset(
        {"artifactregistry.repositories.get", "resourcemanager.projects.get"}
    ),
    "roles/cloudscheduler.admin": frozenset(
        {
            "cloudscheduler.jobs.create",
            "cloudscheduler.jobs.delete",
            "cloudscheduler.jobs.get",
            "cloudscheduler.jobs.update",
            "resourcemanager.projects.get",
            "serviceusage.services.get",
            "serviceusage.services.list",
        }
    ),
    "roles/cloudsql.admin": frozenset(
        {
            "cloudsql.databases.create",
            "cloudsql.databases.delete",
            "cloudsql.databases.get",
            "cloudsql.databases.update",
            "cloudsql.instances.create",
            "cloudsql.instances.delete",
            "cloudsql.instances.get",
            "cloudsql.instances.update",
            "cloudsql.users.create",
            "cloudsql.users.delete",
            "cloudsql.users.list",
            "cloudsql.users.update",
            "resourcemanager.projects.get",
            "serviceusage.services.get",
            "serviceusage.services.list",
        }
    ),
    "roles/cloudsql.client": frozenset({"cloudsql.instances.get"}),
    "roles/cloudtrace.agent": frozenset(),
    "roles/compute.networkAdmin": frozenset(
        {
            "compute.firewalls.get",
            "compute.globalAddresses.create",
            "compute.globalAddresses.createInternal",
            "compute.globalAddresses.delete",
            "compute.globalAddresses.deleteInternal",
            "compute.globalAddresses.get",
            "compute.networks.addPeering",
            "compute.networks.create",
            "compute.networks.delete",
            "compute.networks.get",
            "compute.networks.removePeering",
            "compute.networks.updatePolicy",
            "compute.routers.create",
            "compute.routers.delete",
            "compute.routers.get",
            "compute.routers.update",
            "compute.subnetworks.create",
            "compute.subnetworks.delete",
            "compute.subnetworks.get",
            "compute.subnetworks.update",
            "resourcemanager.projects.get",
            "servicenetworking.services.addPeering",
            "servicenetworking.services.deleteConnection",
            "servicenetworking.services.get",
            "serviceusage.services.get",
            "serviceusage.services.list",
        }
    ),
    "roles/compute.securityAdmin": frozenset(
        {
            "compute.firewalls.create",
            "compute.firewalls.delete",
            "compute.firewalls.get",
            "compute.firewalls.update",
            "compute.networks.get",
            "compute.networks.updatePolicy",
            "compute.routers.get",
            "compute.subnetworks.get",
            "resourcemanager.projects.get",
            "serviceusage.services.get",
            "serviceusage.services.list",
        }
    ),
    "roles/container.admin": frozenset(
        {
            "container.clusters.create",
            "container.clusters.delete",
            "container.clusters.get",
            "container.clusters.update",
            "resourcemanager.projects.get",
        }
    ),
    "roles/datastore.owner": frozenset(
        {
            "datastore.databases.create",
            "datastore.databases.delete",
            "datastore.databases.get",
            "datastore.databases.update",
            "datastore.entities.create",
            "datastore.entities.get",
            "datastore.entities.list",
            "datastore.entities.update",
            "datastore.schemas.create",
            "datastore.schemas.delete",
            "datastore.schemas.get",
            "datastore.schemas.update",
            "resourcemanager.projects.get",
        }
    ),
    "roles/datastore.user": frozenset(
        {
            "datastore.databases.get",
            "datastore.entities.create",
            "datastore.entities.get",
            "datastore.entities.list",
            "datastore.entities.update",
            "resourcemanager.projects.get",
        }
    ),
    "roles/iam.serviceAccountAdmin": frozenset(
        {
            "iam.serviceAccounts.create",
            "iam.serviceAccounts.delete",
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.getIamPolicy",
            "iam.serviceAccounts.setIamPolicy",
            "iam.serviceAccounts.update",
            "resourcemanager.projects.get",
        }
    ),
    "roles/iam.serviceAccountTokenCreator": frozenset(
        {
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.getOpenIdToken",
            "iam.serviceAccounts.signBlob",
            "resourcemanager.projects.get",
        }
    ),
    "roles/iam.serviceAccountUser": frozenset(
        {"iam.serviceAccounts.actAs", "iam.serviceAccounts.get", "resourcemanager.projects.get"}
    ),
    "roles/logging.logWriter": frozenset(),
    "roles/monitoring.metricWriter": frozenset(),
    "roles/pubsub.admin": frozenset(
        {
            "pubsub.subscriptions.consume",
            "pubsub.subscriptions.create",
            "pubsub.subscriptions.delete",
            "pubsub.subscriptions.get",
            "pubsub.subscriptions.getIamPolicy",
            "pubsub.subscriptions.setIamPolicy",
            "pubsub.subscriptions.update",
            "pubsub.topics.attachSubscription",
            "pubsub.topics.create",
            "pubsub.topics.delete",
            "pubsub.topics.get",
            "pubsub.topics.getIamPolicy",
            "pubsub.topics.publish",
            "pubsub.topics.setIamPolicy",
            "pubsub.topics.update",
            "resourcemanager.projects.get",
            "serviceusage.services.get",
            "serviceusage.services.list",
        }
    ),
    "roles/pubsub.publisher": frozenset({"pubsub.topics.publish"}),
    "roles/pubsub.subscriber": frozenset(
        {"pubsub.subscriptions.consume", "pubsub.topics.attachSubscription"}
    ),
    "roles/redis.admin": frozenset(
        {
            "redis.instances.create",
            "redis.instances.delete",
            "redis.instances.get",
            "redis.instances.getAuthString",
            "redis.instances.update",
            "resourcemanager.projects.get",
        }
    ),
    "roles/resourcemanager.projectIamAdmin": frozenset(
        {
            "resourcemanager.projects.get",
            "resourcemanager.projects.getIamPolicy",
            "resourcemanager.projects.setIamPolicy",
        }
    ),
    "roles/run.admin": frozenset(
        {
            "resourcemanager.projects.get",
            "run.jobs.create",
            "run.jobs.delete",
            "run.jobs.get",
            "run.jobs.getIamPolicy",
            "run.jobs.run",
            "run.jobs.setIamPolicy",
            "run.jobs.update",
            "run.routes.invoke",
            "run.services.create",
            "run.services.delete",
            "run.services.get",
            "run.services.getIamPolicy",
            "run.services.setIamPolicy",
            "run.services.update",
        }
    ),
    "roles/run.invoker": frozenset({"run.jobs.run", "run.routes.invoke"}),
    "roles/secretmanager.admin": frozenset(
        {
            "resourcemanager.projects.get",
            "secretmanager.secrets.create",
            "secretmanager.secrets.delete",
            "secretmanager.secrets.get",
            "secretmanager.secrets.getIamPolicy",
            "secretmanager.secrets.setIamPolicy",
            "secretmanager.secrets.update",
            "secretmanager.versions.access",
            "secretmanager.versions.add",
            "secretmanager.versions.destroy",
            "secretmanager.versions.get",
        }
    ),
    "roles/secretmanager.secretAccessor": frozenset(
        {"resourcemanager.projects.get", "secretmanager.versions.access"}
    ),
    "roles/servicenetworking.networksAdmin": frozenset(
        {
            "servicenetworking.services.addPeering",
            "servicenetworking.services.deleteConnection",
            "servicenetworking.services.get",
        }
    ),
    "roles/serviceusage.serviceUsageAdmin": frozenset(
        {"serviceusage.services.enable", "serviceusage.services.get", "serviceusage.services.list"}
    ),
    "roles/storage.admin": frozenset(
        {
            "resourcemanager.projects.get",
            "storage.buckets.create",
            "storage.buckets.delete",
            "storage.buckets.get",
            "storage.buckets.getIamPolicy",
            "storage.buckets.setIamPolicy",
            "storage.buckets.update",
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.get",
            "storage.objects.list",
        }
    ),
    "roles/storage.objectUser": frozenset(
        {
            "resourcemanager.projects.get",
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.get",
            "storage.objects.list",
        }
    ),
    "roles/storage.objectViewer": frozenset(
        {"resourcemanager.projects.get", "storage.objects.get", "storage.objects.list"}
    ),
}
