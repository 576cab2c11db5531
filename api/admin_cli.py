"""Operator commands: `txt2img-admin keys create|list|revoke`,
`txt2img-admin dead-letters list|replay|purge`, `txt2img-admin outbox sweep` and
`txt2img-admin webhooks secret --owner X`.

Talks to the configured job store directly (same settings as the API), so run it where the
API's database is reachable. `keys create` prints the new key alone on its last line: it is
shown once and stored only as a keyed hash.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from api.api_keys import ApiKeyService
from api.dead_letter_replay import build_replay, select
from api.job_recovery import build_recovery
from api.outbox_sweeper import OutboxSweeper
from dal.core import Core, build_core
from dal.errors import ApiKeyNotFound, StoreUnavailable
from dal.factory import build_broker_queue
from dal.settings import Settings
from dal.webhooks.signing import owner_secret


def _open_core(settings: Settings) -> Core:
    """The shared core, without webhook delivery: a command's endings (an outbox give-up) are
    delivered by the webhook redrive of the API or worker processes."""
    if settings.job_store == "memory":
        raise SystemExit(
            "JOB_STORE=memory keeps jobs and keys inside one process; the admin command needs "
            "a persistent store (e.g. JOB_STORE=sql)."
        )
    return build_core(settings, deliver_webhooks=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="txt2img-admin", description=__doc__)
    commands = parser.add_subparsers(dest="group", required=True)
    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--owner", required=True, help="whose jobs the key creates and sees")
    create.add_argument("--label", default="", help="a note for operators")
    create.add_argument(
        "--max-in-flight",
        type=_quota,
        metavar="N",
        help="jobs its owner may have queued or running (0: unlimited; QUOTA_MAX_IN_FLIGHT)",
    )
    create.add_argument(
        "--images-per-day",
        type=_quota,
        metavar="N",
        help="images per UTC day for its owner (0: unlimited; QUOTA_IMAGES_PER_DAY)",
    )
    create.add_argument(
        "--weight",
        type=_weight,
        default=1,
        metavar="N",
        help="its share of the GPUs against other keys' waiting jobs (1 or more; 2 gets twice "
        "the hand-overs of 1; default 1)",
    )
    listing = key_commands.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--owner")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id, effective at once")
    revoke.add_argument("key_id")

    letters = commands.add_parser("dead-letters", help="inspect and replay dead-lettered jobs")
    letter_commands = letters.add_subparsers(dest="command", required=True)
    letter_commands.add_parser("list", help="list dead letters (they stay in the box)")
    for name, text in (
        ("replay", "put jobs back on the jobs queue; they run again from queued"),
        ("purge", "drop dead letters for good; their jobs stay failed"),
    ):
        action = letter_commands.add_parser(name, help=text)
        which = action.add_mutually_exclusive_group(required=True)
        which.add_argument("--job", action="append", default=[], help="a job id (repeatable)")
        which.add_argument("--all", action="store_true", help="every dead letter")
        action.add_argument("--older-than", type=float, metavar="SECONDS", default=None)
        action.add_argument("--dry-run", action="store_true", help="say what would happen")

    outbox = commands.add_parser("outbox", help="jobs recorded but never published")
    outbox_commands = outbox.add_subparsers(dest="command", required=True)
    sweep = outbox_commands.add_parser(
        "sweep",
        help="publish queued jobs older than OUTBOX_GRACE_S that were never published; fail "
        "those older than OUTBOX_GIVE_UP_S",
    )
    sweep.add_argument("--dry-run", action="store_true", help="say what would happen")

    hooks = commands.add_parser("webhooks", help="webhook signing secrets")
    hook_commands = hooks.add_subparsers(dest="command", required=True)
    secret = hook_commands.add_parser(
        "secret",
        help="print an owner's webhook signing secret, a Standard Webhooks whsec_ secret "
        "(derived, nothing is stored)",
    )
    secret.add_argument("--owner", required=True, help="whose deliveries it verifies")
    return parser


def _quota(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (unlimited) or more")
    return value


def _weight(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _quota_cell(value: int | None) -> str:
    if value is None:
        return "default"
    return "unlimited" if value == 0 else str(value)


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings or Settings()
    if args.group == "dead-letters":
        return _dead_letters(args, settings)
    if args.group == "outbox":
        return _outbox(args, settings)
    if args.group == "webhooks":
        return _webhook_secret(args.owner, settings)
    core = _open_core(settings)
    service = ApiKeyService(
        core.api_keys,
        pepper=settings.api_key_pepper.get_secret_value(),
        revocations=core.key_revocations,
    )
    out = sys.stdout
    try:
        if args.command == "create":
            owner = args.owner.strip()
            if not owner or len(owner) > 128:
                print("error: --owner must be 1-128 characters", file=sys.stderr)
                return 2
            issued = service.issue(
                owner=owner,
                label=args.label,
                max_in_flight=args.max_in_flight,
                images_per_day=args.images_per_day,
                weight=args.weight,
            )
            out.write(f"created key {issued.record.id} for owner {owner}\n")
            out.write(issued.secret + "\n")
        elif args.command == "list":
            out.write(
                "id\towner\tcreated_at\tstatus\tmax_in_flight\timages_per_day\tweight\tlabel\n"
            )
            for key in service.list_keys(args.owner):
                state = (
                    "active" if key.is_active else f"revoked {key.revoked_at:%Y-%m-%dT%H:%M:%SZ}"
                )
                out.write(
                    f"{key.id}\t{key.owner}\t{key.created_at:%Y-%m-%dT%H:%M:%SZ}\t{state}\t"
                    f"{_quota_cell(key.max_in_flight)}\t{_quota_cell(key.images_per_day)}\t"
                    f"{key.weight}\t{key.label}\n"
                )
        elif args.command == "revoke":
            try:
                key = service.revoke(args.key_id)
            except ApiKeyNotFound:
                print(f"error: no key {args.key_id!r}", file=sys.stderr)
                return 1
            except StoreUnavailable as exc:
                print(
                    f"error: key {args.key_id} is revoked in the store, but running API "
                    f"processes could not be told ({exc}): they may accept it for up to "
                    f"KEY_CACHE_TTL_S ({settings.key_cache_ttl_s:g} s). Run the command "
                    "again once the channel is back.",
                    file=sys.stderr,
                )
                return 1
            out.write(f"revoked key {key.id} (owner {key.owner})\n")
        return 0
    finally:
        core.close()


def _webhook_secret(owner: str, settings: Settings) -> int:
    if not owner.strip() or len(owner) > 128:
        print("error: --owner must be 1-128 characters", file=sys.stderr)
        return 2
    sys.stdout.write(owner_secret(settings.resolved_webhook_signing_secret, owner) + "\n")
    return 0


def _refused_without_broker(settings: Settings, what: str) -> bool:
    """True (after saying why) unless jobs go through a broker. The inline queue lives in the
    API process, which re-runs its queued jobs when it starts, and keeps no dead letters."""
    if settings.job_queue in ("pubsub", "celery"):
        return False
    print(
        f"error: {what} with JOB_QUEUE=pubsub or celery, not {settings.job_queue}", file=sys.stderr
    )
    return True


def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    if _refused_without_broker(settings, "dead letters exist"):
        return 2
    core = _open_core(settings)
    out = sys.stdout
    try:
        replay = build_replay(core)
        if args.command == "list":
            out.write("job_id\tdeliveries\tsource\tage_s\tstatus\tlast_error\n")
            for row in replay.rows():
                age = "-" if row.age_s is None else f"{row.age_s:.0f}"
                out.write(
                    f"{row.job_id or '-'}\t{row.delivery_count or '-'}\t{row.source or '-'}\t"
                    f"{age}\t{row.job_status}\t{row.last_error or '-'}\n"
                )
            return 0
        selection = select(args.job, all_=args.all, older_than_s=args.older_than)
        act = replay.replay if args.command == "replay" else replay.purge
        results = act(selection, dry_run=args.dry_run)
        for result in results:
            out.write(f"{result.action}\t{result.job_id or '-'}\t{result.detail}\n")
        out.write(f"{len(results)} dead letter(s) selected\n")
        return 0
    finally:
        core.close()


def _outbox(args: argparse.Namespace, settings: Settings) -> int:
    if _refused_without_broker(settings, "the outbox is swept"):
        return 2
    core = _open_core(settings)
    out = sys.stdout
    try:
        queue = build_broker_queue(settings, core.closers)
        dispatcher = core.build_dispatcher(queue)
        sweeper = OutboxSweeper(
            core.jobs,
            queue,
            core.finisher,
            grace_s=settings.outbox_grace_s,
            give_up_s=settings.outbox_give_up_s,
            dispatcher=dispatcher,
        )
        unpublished = sweeper.sweep(dry_run=args.dry_run)
        recovered = build_recovery(core, queue).recover(dry_run=args.dry_run)
        for action, job_id, detail in [
            *((r.action, r.job_id, r.detail) for r in unpublished),
            *((r.action, r.job_id, r.detail) for r in recovered),
        ]:
            out.write(f"{action}\t{job_id}\t{detail}\n")
        out.write(f"{len(unpublished)} unpublished job(s) found\n")
        out.write(f"{len(recovered)} job(s) lost by the queue or their worker\n")
        if not args.dry_run:
            # Also hands over what fits: a scheduled sweep keeps the line moving while no
            # API instance has CPU (Cloud Run throttles it between requests).
            line = dispatcher.reconcile()
            out.write(
                f"line: {line.handed_over} job(s) handed over, {line.freed} slot(s) freed"
                f"{', rebuilt from the job store' if line.restored else ''}\n"
            )
        return 0
    finally:
        core.close()


if __name__ == "__main__":
    raise SystemExit(main())
