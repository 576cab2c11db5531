"""The in-memory adapters against the port contracts."""

from __future__ import annotations

import pytest

from dal.memory import MemoryApiKeyStore, MemoryBlobStore, MemoryJobStore
from dal.url_signing import HmacUrlSigner
from tests.contracts.api_key_store_contract import ApiKeyStoreContract
from tests.contracts.blob_store_contract import BlobStoreContract, HmacSignedUrlContract
from tests.contracts.job_store_contract import JobStoreContract, ManualClock


class TestMemoryJobStore(JobStoreContract):
    @pytest.fixture
    def store(self, clock: ManualClock) -> MemoryJobStore:
        return MemoryJobStore(clock=clock)


class TestMemoryApiKeyStore(ApiKeyStoreContract):
    @pytest.fixture
    def store(self) -> MemoryApiKeyStore:
        return MemoryApiKeyStore()


class TestMemoryBlobStore(BlobStoreContract, HmacSignedUrlContract):
    @pytest.fixture
    def store(self, signer: HmacUrlSigner) -> MemoryBlobStore:
        return MemoryBlobStore(signer)
