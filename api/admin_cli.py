"""Operator commands: `txt2img-admin keys create|list|revoke`.

Talks to the configured job store directly (same settings as the API), so run it where the
API's database is reachable. `keys create` prints the new key alone on its last line: it is
shown once and stored only as a keyed hash.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from api.api_keys import ApiKeyService
from api.wiring import build_stores
from dal.errors import NotFound
from dal.settings import Settings


def _key_service(settings: Settings) -> tuple[ApiKeyService, list[Callable[[], None]]]:
    if settings.job_store == "memory":
        raise SystemExit(
            "JOB_STORE=memory keeps keys inside one process; the admin command needs a "
            "persistent store (e.g. JOB_STORE=sql)."
        )
    closers: list[Callable[[], None]] = []
    _, key_store = build_stores(settings, closers)
    return ApiKeyService(key_store, pepper=settings.api_key_pepper.get_secret_value()), closers


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="txt2img-admin", description=__doc__)
    commands = parser.add_subparsers(dest="group", required=True)
    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--owner", required=True, help="whose jobs the key creates and sees")
    create.add_argument("--label", default="", help="a note for operators")
    listing = key_commands.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--owner")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id, effective at once")
    revoke.add_argument("key_id")
    return parser


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    args = _parser().parse_args(argv)
    service, closers = _key_service(settings or Settings())
    out = sys.stdout
    try:
        if args.command == "create":
            owner = args.owner.strip()
            if not owner or len(owner) > 128:
                print("error: --owner must be 1-128 characters", file=sys.stderr)
                return 2
            issued = service.issue(owner=owner, label=args.label)
            out.write(f"created key {issued.record.id} for owner {owner}\n")
            out.write(issued.secret + "\n")
        elif args.command == "list":
            out.write("id\towner\tcreated_at\tstatus\tlabel\n")
            for key in service.list_keys(args.owner):
                state = (
                    "active" if key.is_active else f"revoked {key.revoked_at:%Y-%m-%dT%H:%M:%SZ}"
                )
                out.write(
                    f"{key.id}\t{key.owner}\t{key.created_at:%Y-%m-%dT%H:%M:%SZ}\t{state}\t"
                    f"{key.label}\n"
                )
        elif args.command == "revoke":
            try:
                key = service.revoke(args.key_id)
            except NotFound:
                print(f"error: no key {args.key_id!r}", file=sys.stderr)
                return 1
            out.write(f"revoked key {key.id} (owner {key.owner})\n")
        return 0
    finally:
        for close in closers:
            close()


if __name__ == "__main__":
    raise SystemExit(main())
