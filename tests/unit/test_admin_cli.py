"""The admin command creates, lists and revokes keys in a persistent store."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.admin_cli import main
from api.api_keys import ApiKeyService
from dal.factory import build_stores
from dal.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(app_env="local", data_dir=tmp_path)


def key_service(settings: Settings) -> ApiKeyService:
    _, store = build_stores(settings, [])
    return ApiKeyService(store, pepper=settings.api_key_pepper.get_secret_value())


class TestAdminCli:
    def test_create_prints_the_new_key_alone_on_its_last_line(self, settings, capsys) -> None:
        """The printed key authenticates as the requested owner."""
        assert main(["keys", "create", "--owner", "alice", "--label", "ci"], settings) == 0
        secret = capsys.readouterr().out.strip().splitlines()[-1]
        principal = key_service(settings).authenticate(secret)
        assert principal is not None and principal.owner == "alice"

    def test_list_never_shows_secrets_and_revoke_disables(self, settings, capsys) -> None:
        """Listing shows ids and owners only; revoking by id disables the key."""
        main(["keys", "create", "--owner", "bob"], settings)
        secret = capsys.readouterr().out.strip().splitlines()[-1]
        main(["keys", "list"], settings)
        listing = capsys.readouterr().out
        assert "bob" in listing and secret not in listing
        key_id = listing.splitlines()[1].split("\t")[0]
        assert main(["keys", "revoke", key_id], settings) == 0
        assert key_service(settings).authenticate(secret) is None
        main(["keys", "list", "--owner", "bob"], settings)
        assert "revoked" in capsys.readouterr().out

    def test_revoking_an_unknown_key_fails(self, settings, capsys) -> None:
        """An unknown key id is an error with a non-zero exit."""
        assert main(["keys", "revoke", "key_nope"], settings) == 1
        assert "no key" in capsys.readouterr().err

    def test_memory_store_is_refused(self) -> None:
        """Keys made in a throwaway in-memory store would be useless: refuse."""
        with pytest.raises(SystemExit, match="JOB_STORE=memory"):
            main(["keys", "list"], Settings(app_env="test"))
