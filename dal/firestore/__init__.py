"""Firestore adapters (the `cloud` extra): the job store and the API key store.

Importing this package imports google-cloud-firestore; `dal` itself never does.
"""

from dal.firestore.client import make_firestore_client
from dal.firestore.job_store import FirestoreJobStore
from dal.firestore.key_store import FirestoreApiKeyStore

__all__ = ["FirestoreApiKeyStore", "FirestoreJobStore", "make_firestore_client"]
