"""The ``payhooks`` command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from infra.settings import Settings, SettingsError, redact_url

DEV_WEBHOOK_SECRET = "whsec_payhooks_dev"
DEV_API_TOKEN = "payhooks-dev-token-not-for-production"
LONG_RUNNING = ("web", "worker", "beat")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """payhooks: payment webhooks in, credits granted exactly once."""


@main.command()
def migrate() -> None:
    """Apply database migrations (the Procfile's release step)."""
    from models.migrate import upgrade

    settings = _settings()
    url = settings.require("database_url", "migrations need PostgreSQL")
    upgrade(url)
    click.echo(f"database at head: {redact_url(url)}")


@main.command()
@click.option("--secret", envvar="STRIPE_WEBHOOK_SECRET", required=True,
              help="Signing secret (default: the first of $STRIPE_WEBHOOK_SECRET).")
@click.option("--timestamp", type=int, default=None, help="Unix time to sign with (default: now).")
@click.argument("body", type=click.File("rb"), default="-")
def sign(secret: str, timestamp: int | None, body) -> None:
    """Print a Stripe-Signature header value for BODY (a file, or - for stdin)."""
    from providers.stripe import sign as stripe_sign

    first = secret.split(",")[0].strip()
    click.echo(stripe_sign(body.read(), first, timestamp or int(time.time())))


@main.command()
@click.option("--procfile", type=click.Path(exists=True, dir_okay=False), default="Procfile")
@click.option("--var", "var_dir", type=click.Path(file_okay=False), default="var",
              help="Where embedded servers keep their data.")
def run(procfile: str, var_dir: str) -> None:
    """Run the whole stack from the Procfile: release, then web, worker and beat.

    With DATABASE_URL or REDIS_URL unset, a real PostgreSQL and a real Redis are
    started under ./var for you (development only).
    """
    from honcho.environ import parse_procfile
    from honcho.manager import Manager
    from honcho.printer import Printer

    env = dict(os.environ)
    var = Path(var_dir)
    embedded = []
    try:
        if not env.get("DATABASE_URL"):
            from infra.embedded import EmbeddedPostgres

            click.echo(f"DATABASE_URL not set: starting PostgreSQL under {var / 'pg'}")
            postgres = EmbeddedPostgres(var / "pg").start()
            embedded.append(postgres)
            env["DATABASE_URL"] = postgres.url
        if not env.get("REDIS_URL"):
            from infra.embedded import EmbeddedRedis

            redis_server = EmbeddedRedis(var / "redis").start()
            embedded.append(redis_server)
            env["REDIS_URL"] = redis_server.url
            click.echo(f"REDIS_URL not set: started Redis (AOF on) at {redis_server.url}")
        if embedded:
            _fill_dev_secrets(env)
            click.echo(
                "to use the payhooks CLI against this stack, in another shell:\n"
                f"  export DATABASE_URL='{env['DATABASE_URL']}' REDIS_URL='{env['REDIS_URL']}'"
            )
        env.setdefault("PORT", "8000")
        if not env.get("PROMETHEUS_MULTIPROC_DIR"):
            # One /metrics for web, worker and beat: they share this machine.
            metrics_dir = var / "metrics"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())

        processes = parse_procfile(Path(procfile).read_text()).processes
        missing = {"release", *LONG_RUNNING} - set(processes)
        if missing:
            raise click.ClickException(f"{procfile} lacks processes: {sorted(missing)}")
        click.echo(f"release: {processes['release']}")
        release = subprocess.run(processes["release"], shell=True, env=env)
        if release.returncode != 0:
            raise click.ClickException(f"release failed with exit code {release.returncode}")

        manager = Manager(Printer(sys.stdout))
        for name in LONG_RUNNING:
            manager.add_process(name, processes[name], env=env)
        click.echo(f"receiver on http://localhost:{env['PORT']} — Ctrl-C stops everything")
        manager.loop()
        sys.exit(manager.returncode)
    finally:
        for service in reversed(embedded):
            service.stop()


def _fill_dev_secrets(env: dict[str, str]) -> None:
    """Development defaults so the README's curl example works out of the box.

    The values are published in the README, so a stack using any of them listens on
    127.0.0.1 only: anyone on the network could otherwise sign events or read the API.
    """
    filled = False
    for name, value in (("STRIPE_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET), ("API_TOKEN", DEV_API_TOKEN)):
        if not env.get(name):
            env[name] = value
            filled = True
            click.echo(f"{name} not set: using the development value {value!r}")
    if filled:
        env["WEB_HOST"] = "127.0.0.1"
        click.echo("development secrets in use: the receiver listens on 127.0.0.1 only")


def _recovery(provider: str = "stripe"):
    from providers.paypal_api import PayPalNotConfiguredError
    from providers.stripe_api import StripeNotConfiguredError
    from workers.runtime import Runtime

    runtime = Runtime(_settings())
    try:
        if provider == "paypal":
            from application.paypal_recovery import PayPalRecovery

            return runtime.settings, PayPalRecovery(runtime.unit, runtime.provider_api("paypal"))
        return runtime.settings, runtime.recovery()
    except (StripeNotConfiguredError, PayPalNotConfiguredError) as exc:
        raise click.ClickException(str(exc)) from None


_PROVIDER = click.option("--provider", type=click.Choice(["stripe", "paypal"]), default="stripe", show_default=True,
                         help="Whose payments or events.")


@main.command()
@click.option("--min-age", type=click.IntRange(min=0), default=None, metavar="SECONDS",
              help="Only payments older than this (default: SWEEP_MIN_AGE_SECONDS).")
@click.option("--dry-run", is_flag=True, help="Ask the provider and print, change nothing.")
@_PROVIDER
def sweep(min_age: int | None, dry_run: bool, provider: str) -> None:
    """Check pending payments with the provider now: credit the paid, expire the expired."""
    from datetime import timedelta

    settings, recovery = _recovery(provider)
    report = recovery.sweep_pending(
        min_age=timedelta(seconds=settings.sweep_min_age_seconds if min_age is None else min_age),
        expiry_grace=timedelta(seconds=settings.sweep_expiry_grace_seconds),
        batch_size=settings.sweep_batch_size,
        calls_per_second=settings.sweep_calls_per_second,
        dry_run=dry_run,
    )
    for payment_id, session_id, outcome in report.decisions:
        verb = "would be" if dry_run and outcome != "still open" else "is"
        click.echo(f"payment {payment_id} ({session_id}) {verb} {outcome}")
    click.echo(
        f"{'dry run: ' if dry_run else ''}checked {report.checked}: {report.completed} completed, "
        f"{report.expired} expired, {report.still_open} still open"
    )
    for problem in report.errors:
        click.echo(f"error: {problem}", err=True)
    if report.errors:
        sys.exit(1)


@main.command()
@click.option("--since", default=None, metavar="DURATION|ISO",
              help="Reach back this far instead of the stored cursor: 2h, 3d, 90m, or 2026-11-01T00:00:00Z.")
@click.option("--dry-run", is_flag=True, help="List what is missing, apply nothing, leave the cursor.")
@_PROVIDER
def reconcile(since: str | None, dry_run: bool, provider: str) -> None:
    """Find provider events missing from the inbox and apply them."""
    from datetime import timedelta

    from providers.stripe_api import ProviderUnavailableError

    settings, recovery = _recovery(provider)
    try:
        report = recovery.reconcile_events(
            overlap=timedelta(seconds=settings.reconcile_overlap_seconds),
            initial_lookback=timedelta(seconds=settings.reconcile_initial_lookback_seconds),
            since=_since(since) if since else None,
            dry_run=dry_run,
        )
    except ProviderUnavailableError as exc:
        raise click.ClickException(f"{exc}; the cursor was not moved") from None
    for event_id in report["missing_ids"]:
        click.echo(f"missing: {event_id}{'' if dry_run else ' (applied)'}")
    click.echo(
        f"{'dry run: ' if dry_run else ''}since {report['since']}: {report['listed']} events listed, "
        f"{report['missing']} missing from the inbox, {report['applied']} applied; cursor {report['cursor']}"
    )


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(text: str):
    """A duration back from now (2h, 3d) or an ISO 8601 time."""
    from datetime import UTC, datetime, timedelta

    unit = text[-1:].lower()
    if unit in _DURATION and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * _DURATION[unit])
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a duration (2h, 3d) nor an ISO time", param_hint="--since") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- stripe -----------------------------------------------------------------------------


@main.group()
def stripe() -> None:
    """Stripe account set-up."""


@stripe.command("setup")
@click.option(
    "--url",
    required=True,
    metavar="URL",
    help="Where Stripe should deliver events: https://<your host>/webhooks/stripe.",
)
@click.option("--dry-run", is_flag=True, help="Show what would change at Stripe, change nothing.")
@click.option(
    "--recreate",
    is_flag=True,
    help="Create a new endpoint (new signing secret, pinned API version), delete the old one.",
)
@click.option(
    "--keep-old",
    is_flag=True,
    help="With --recreate: keep the old endpoint until the new secret is deployed.",
)
@click.option(
    "--description",
    default="payhooks",
    show_default=True,
    help="Description of a created endpoint.",
)
def stripe_setup(url: str, dry_run: bool, recreate: bool, keep_old: bool, description: str) -> None:
    """Create or update the webhook endpoint for URL with the events payhooks handles.

    The endpoint is subscribed to exactly payhooks' event types and, when created,
    pinned to the API version payhooks is tested with. Stripe shows a signing
    secret only when it creates an endpoint: it is printed then, once.
    """
    from providers.stripe import API_VERSION, HANDLED_TYPES
    from providers.stripe_api import (
        ProviderRequestError,
        ProviderUnavailableError,
        StripeAPI,
        StripeNotConfiguredError,
    )
    from workers import stripe_setup as setup

    if keep_old and not recreate:
        raise click.UsageError("--keep-old only makes sense with --recreate")
    settings = _settings()
    try:
        api = StripeAPI(settings.reveal("stripe_api_key"), settings.stripe_api_base)
        the_plan = setup.plan(
            api.list_webhook_endpoints(),
            url,
            HANDLED_TYPES,
            API_VERSION,
            recreate=recreate,
            keep_old=keep_old,
        )
        for warning in the_plan.warnings:
            click.echo(f"warning: {warning}", err=True)
        _describe_plan(the_plan, dry_run)
        if dry_run or not the_plan.changes:
            return
        result = setup.apply(api, the_plan, description=description)
    except (
        StripeNotConfiguredError,
        ProviderRequestError,
        ProviderUnavailableError,
        ValueError,
    ) as exc:
        raise click.ClickException(str(exc)) from None
    _report_setup(result, the_plan)


def _describe_plan(the_plan, dry_run: bool) -> None:
    prefix = "dry run: would " if dry_run else "will "
    if not the_plan.changes:
        endpoint_id, count = the_plan.existing[0]["id"], len(the_plan.events)
        click.echo(f"{the_plan.url}: up to date ({endpoint_id}, {count} event types)")
        return
    for step in the_plan.steps:
        if step.action == "create":
            click.echo(
                f"{prefix}create an endpoint for {the_plan.url}: "
                f"API version {the_plan.api_version}, "
                f"{len(the_plan.events)} event types: {', '.join(the_plan.events)}"
            )
        elif step.action == "update":
            changes = [f"+{e}" for e in step.add] + [f"-{e}" for e in step.remove]
            if step.enable:
                changes.append("enable it (it is disabled)")
            click.echo(f"{prefix}update {step.endpoint_id}: {' '.join(changes)}")
        else:
            click.echo(f"{prefix}delete {step.endpoint_id}")


def _report_setup(result, the_plan) -> None:
    for endpoint in result.created:
        click.echo(f"created {endpoint['id']} (API version {endpoint['api_version']})")
        click.echo(
            "signing secret — Stripe shows it only now; set it where payhooks runs:\n"
            f"  STRIPE_WEBHOOK_SECRET={endpoint['secret']}"
        )
        if the_plan.existing:
            click.echo(
                "while both secrets may sign deliveries, list both (new first): "
                "STRIPE_WEBHOOK_SECRET=<new>,<old>"
            )
    for endpoint in result.updated:
        click.echo(
            f"updated {endpoint['id']}; its signing secret is unchanged (Stripe shows a secret "
            "only when it creates an endpoint: run with --recreate for a new one)"
        )
    for endpoint_id in result.deleted:
        click.echo(f"deleted {endpoint_id}")
    kept = [e["id"] for e in the_plan.existing if e["id"] not in result.deleted]
    if result.created and kept:
        click.echo(
            f"kept {', '.join(kept)}: delete it in the Dashboard once the new secret is deployed"
        )


# -- dead letters -------------------------------------------------------------------


def _dead_letters():
    from workers.runtime import Runtime

    settings = _settings()
    settings.require("database_url", "dead letters live in PostgreSQL")
    return Runtime(settings).dead_letters()


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def _filters(provider, event_type, since, error, status):
    from models.dead_letters import Filters
    from models.enums import DeadLetterStatus

    return Filters(
        status=None if status == "all" else DeadLetterStatus(status),
        provider=provider,
        event_type=event_type,
        since=_since(since) if since else None,
        error=error,
    )


def _filter_options(command):
    for option in reversed([
        click.option("--provider", default=None, help="Only this provider (stripe, paypal)."),
        click.option("--type", "event_type", default=None, help="Only this event type."),
        click.option("--since", default=None, metavar="DURATION|ISO", help="Failed at or after: 2h, 3d, or an ISO time."),
        click.option("--error", default=None, metavar="TEXT", help="Error message contains TEXT (case-insensitive)."),
        click.option("--status", type=click.Choice(["open", "replayed", "discarded", "all"]), default="open", show_default=True),
    ]):
        command = option(command)
    return command


@main.group()
def dlq() -> None:
    """Dead letters: events that failed for good, kept with their raw body."""


@dlq.command("list")
@_filter_options
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def dlq_list(provider, event_type, since, error, status, as_json, limit) -> None:
    """List dead letters, newest failure first."""
    import json

    letters, total = _dead_letters().list(_filters(provider, event_type, since, error, status), limit=limit)
    if as_json:
        click.echo(json.dumps({"dead_letters": letters, "total_count": total}, indent=2))
        return
    for letter in letters:
        click.echo(
            f"{letter['id']:>6}  {letter['status']:<9} {letter['last_failed_at'][:19]}  {letter['provider']}  "
            f"{letter['event_type']:<34} {letter['event_id']}  [{letter['error_class']}] {letter['error'][:80]}"
        )
    click.echo(f"{len(letters)} shown of {total}")


@dlq.command("show")
@click.argument("dead_letter_id", type=int)
def dlq_show(dead_letter_id: int) -> None:
    """Everything about one dead letter: why, how often, the traceback and the raw body."""
    import json

    from application.dlq import DeadLetterNotFoundError

    try:
        letter = _dead_letters().show(dead_letter_id)
    except DeadLetterNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    payload, trace = letter.pop("payload"), letter.pop("traceback")
    for key, value in letter.items():
        click.echo(f"{key:>16}: {value}")
    if trace:
        click.echo("\ntraceback:\n" + trace.rstrip())
    try:
        payload = json.dumps(json.loads(payload), indent=2)
    except ValueError:
        pass
    click.echo("\nraw body:\n" + payload)


@dlq.command("replay")
@click.argument("dead_letter_id", type=int, required=False)
@click.option("--all", "replay_all", is_flag=True, help="Every dead letter matching the filters, as a job a worker runs.")
@_filter_options
@click.option("--dry-run", is_flag=True, help="Say what would be replayed, replay nothing.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="With --all: follow the job's progress until it ends, or only queue it.")
def dlq_replay(dead_letter_id, replay_all, provider, event_type, since, error, status, dry_run, wait) -> None:
    """Replay one dead letter (ID) now, or many (--all with filters) as a background job.

    One letter is replayed here and now. --all records a job with the matching
    letters and queues it for a worker (the maintenance queue); this command then
    shows its progress until it ends (Ctrl-C stops watching, not the job), or with
    --no-wait prints its id: follow it later with `payhooks dlq job ID`.
    """
    from application.dlq import DeadLetterNotFoundError

    if (dead_letter_id is None) == (not replay_all):
        raise click.UsageError("give a dead letter ID or --all (with filters), not both")
    if dead_letter_id is not None:
        if dry_run:
            click.echo(f"dry run: would replay dead letter {dead_letter_id}")
            return
        try:
            result = _dead_letters().replay(dead_letter_id, _actor())
        except DeadLetterNotFoundError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"dead letter {dead_letter_id}: {result.outcome}" + (f" ({result.error})" if result.error else ""))
        if result.outcome == "failed_again":
            sys.exit(1)
        return
    filters = _filters(provider, event_type, since, error, status)
    if dry_run:
        ids = _dead_letters().matching(filters)
        click.echo(f"dry run: {len(ids)} dead letters would be replayed: {' '.join(map(str, ids))}")
        return
    from application.jobs import JobNotQueuedError

    jobs = _jobs()
    params = {key: value for key, value in (("provider", provider), ("type", event_type), ("since", since),
                                            ("error", error), ("status", status)) if value is not None}
    try:
        job = jobs.replay_dead_letters(filters, params, _actor())
    except JobNotQueuedError as exc:
        raise click.ClickException(f"could not queue the replay: {exc}") from None
    click.echo(f"job {job['id']}: replaying {job['total']} dead letters")
    if not wait:
        click.echo(f"{job['status']}; follow it with: payhooks dlq job {job['id']} --wait")
        return
    _follow(jobs, job)


@dlq.command("job")
@click.argument("job_id", type=int)
@click.option("--wait", is_flag=True, help="Follow its progress until it ends.")
def dlq_job(job_id: int, wait: bool) -> None:
    """Show a bulk replay job: status, progress and outcomes."""
    from application.jobs import JobNotFoundError

    jobs = _jobs()
    try:
        job = jobs.get(job_id)
    except JobNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    if wait:
        _follow(jobs, job)
        return
    for key in ("id", "status", "total", "done", "outcomes", "requested_by", "created_at", "started_at",
                "finished_at", "error"):
        click.echo(f"{key:>13}: {job[key]}")


def _jobs():
    from application.jobs import Jobs
    from workers.celery_app import make_celery
    from workers.queues import REPLAY_DEAD_LETTERS
    from workers.runtime import Runtime

    settings = _settings()
    settings.require("database_url", "jobs live in PostgreSQL")
    celery = make_celery(settings)
    return Jobs(Runtime(settings).unit, lambda job_id: celery.send_task(REPLAY_DEAD_LETTERS, (job_id,), argsrepr=repr((job_id,))))


POLL_SECONDS = 0.5
NO_WORKER_HINT_SECONDS = 30


def _follow(jobs, job: dict) -> None:
    """A progress bar until the job ends; exit 1 if it failed or a letter failed again."""
    job_id, started = job["id"], time.monotonic()
    hinted = False
    try:
        with click.progressbar(length=job["total"], label=f"job {job_id}", file=sys.stderr) as bar:
            shown = 0
            while True:
                bar.update(job["done"] - shown)
                shown = job["done"]
                if job["status"] in ("finished", "failed"):
                    break
                if job["status"] == "queued" and not hinted and time.monotonic() - started > NO_WORKER_HINT_SECONDS:
                    click.echo(f"\nstill queued after {NO_WORKER_HINT_SECONDS} s: is a worker consuming the "
                               "maintenance queue?", err=True)
                    hinted = True
                time.sleep(POLL_SECONDS)
                job = jobs.get(job_id)
    except KeyboardInterrupt:
        click.echo(f"\nstopped watching; job {job_id} goes on: payhooks dlq job {job_id} --wait", err=True)
        sys.exit(130)
    outcomes = ", ".join(f"{n} {outcome}" for outcome, n in sorted(job["outcomes"].items())) or "nothing to do"
    click.echo(f"job {job_id} {job['status']}: {job['done']} of {job['total']}: {outcomes}")
    if job["status"] == "failed":
        click.echo(f"error: {job['error']}", err=True)
    if job["status"] == "failed" or job["outcomes"].get("failed_again"):
        sys.exit(1)


@dlq.command("discard")
@click.argument("dead_letter_id", type=int)
@click.option("--reason", required=True, help="Why it is safe to drop (kept on the record).")
def dlq_discard(dead_letter_id: int, reason: str) -> None:
    """Close a dead letter without replaying it."""
    from application.dlq import DeadLetterNotFoundError

    try:
        letter = _dead_letters().discard(dead_letter_id, _actor(), reason)
    except (DeadLetterNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"dead letter {dead_letter_id}: {letter['status']} by {letter['resolved_by']}")


@main.group()
def parked() -> None:
    """Events a worker could neither apply nor dead-letter (docs/OPERATIONS.md)."""


def _queue_client():
    from transport.queue import connect

    return connect(_settings().redis_url, timeout=10)


@parked.command("list")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
def parked_list(limit: int) -> None:
    """Provider, event id and receipt time of each parked event, oldest first (never the body)."""
    from transport.queue import Envelope, parked, parked_items

    client = _queue_client()
    for item in parked_items(client, limit):
        try:
            envelope = Envelope.decode(item)
        except (ValueError, KeyError, TypeError):
            click.echo(f"(unreadable item, {len(item):,} bytes)")
            continue
        received = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(envelope.received_at))
        click.echo(f"{envelope.provider}\t{envelope.event_id}\treceived {received}")
    click.echo(f"{parked(client):,} parked", err=True)


@parked.command("requeue")
def parked_requeue() -> None:
    """Put every parked event back on the queue, once you have fixed what refused it."""
    from transport.queue import requeue_parked

    click.echo(f"{requeue_parked(_queue_client()):,} parked events back on the queue")


# -- payments ------------------------------------------------------------------------------


def _manual():
    from application.manual import ManualPayments
    from application.tracker import PaymentTracker

    settings = _settings()
    settings.require("database_url", "payments live in PostgreSQL")
    return ManualPayments(PaymentTracker.from_settings(settings))


def _currency(ctx, param, value: str | None) -> str | None:
    if value is not None and not (len(value) == 3 and value.isascii() and value.isalpha()):
        raise click.BadParameter("a three-letter ISO currency code, such as EUR")
    return value.lower() if value else None


def _mark_options(command):
    for option in reversed([
        click.argument("payment_id", type=click.IntRange(1)),
        click.option("--reason", default=None, help="Why (kept in the payment's history)."),
        click.option("--key", default=None, help="Idempotency key: the same key twice is one mark."),
        click.option("--actor", default=None, help="Who, for the history (default: cli:$USER)."),
        click.option("--json", "as_json", is_flag=True, help="Print the payment as JSON."),
    ]):
        command = option(command)
    return command


def _operate(call, as_json: bool) -> None:
    """Run one operation on a payment; print it, or the reason it was refused (exit 1)."""
    import json

    from application.tracker import ConflictError, NotFoundError

    try:
        payment = call()
    except (ConflictError, NotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(payment, indent=2))
        return
    click.echo(
        f"payment {payment['id']} ({payment['provider']}, user {payment['user_id']}): {payment['status']}; "
        f"{payment['amount_cents']} {payment['currency']} for {payment['credits']} credits, "
        f"granted {payment['credits_granted']}, taken back {payment['credits_taken_back']}"
    )
    for row in payment.get("history", [])[-1:]:
        click.echo(f"  last change: {row['from']} -> {row['to']} by {row['actor']} at {row['at']}")


@main.group()
def payments() -> None:
    """Payments: list them; record manual ones (bank transfer, cash) and mark them paid, failed, cancelled or refunded.

    Each mark goes through the same rules, history and ledger as a provider's
    event, with who (--actor, default cli:$USER) and why (--reason) in the
    history. Amounts are in the currency's minor unit (cents).
    """


@payments.command("list")
@click.option("--provider", default=None, help="Only this provider's payments (stripe, paypal, manual).")
@click.option("--status", default=None, help="Only payments in this status (pending, completed, …).")
@click.option("--user", "user_id", default=None, help="Only this user's payments.")
@click.option("--limit", type=click.IntRange(1, 100), default=50, show_default=True)
def payments_list(provider, status, user_id, limit) -> None:
    """Payments, newest first."""
    from application.tracker import InvalidRequestError

    try:
        page = _manual().tracker.history(user_id=user_id, status=status, provider=provider, page_size=limit)
    except InvalidRequestError as exc:
        raise click.ClickException(str(exc)) from None
    for p in page["payments"]:
        click.echo(f"{p['id']:>6}  {p['provider']:<7} {p['status']:<18} {p['user_id']:<20} "
                   f"{p['amount_cents']} {p['currency']}  {p['credits']} credits  {p['created_at'][:19]}")
    click.echo(f"{len(page['payments'])} shown of {page['total_count']}")


@payments.command("create-manual")
@click.option("--user", "user_id", required=True, help="Who is buying the credits.")
@click.option("--credits", type=click.IntRange(1), required=True)
@click.option("--amount", "amount_cents", type=click.IntRange(1), required=True, help="The price, in minor units (cents).")
@click.option("--currency", callback=_currency, required=True)
@click.option("--method", type=click.Choice(["bank_transfer", "cash", "other"]), required=True)
@click.option("--reference", default=None, help="The transfer's reference, a receipt number…")
@click.option("--reason", default=None, help="A note kept with the payment.")
@click.option("--key", default=None, help="Idempotency key: the same key twice records one payment.")
@click.option("--actor", default=None, help="Who, for the record (default: cli:$USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the payment as JSON.")
def payments_create_manual(user_id, credits, amount_cents, currency, method, reference, reason, key, actor, as_json) -> None:
    """Record a manual payment, pending until marked paid (or expired after MANUAL_PAYMENT_EXPIRE_AFTER_DAYS)."""
    _operate(lambda: _manual().record(
        user_id=user_id, credits=credits, amount_cents=amount_cents, currency=currency, method=method,
        reference=reference, reason=reason, key=key, actor=actor or _actor(),
    )[0], as_json)


@payments.command("mark-paid")
@_mark_options
@click.option("--reference", default=None, help="What the money arrived under (a bank transfer's reference).")
@click.option("--amount", "amount_cents", type=click.IntRange(1), default=None,
              help="What arrived, in minor units, if not the recorded amount (kept as a mismatch).")
@click.option("--currency", callback=_currency, default=None, help="What it arrived in, if not the recorded currency.")
def payments_mark_paid(payment_id, reason, key, actor, as_json, reference, amount_cents, currency) -> None:
    """The money arrived: complete the payment and grant its credits, once."""
    _operate(lambda: _manual().mark_paid(
        payment_id, reference=reference, amount_cents=amount_cents, currency=currency,
        reason=reason, key=key, actor=actor or _actor(),
    ), as_json)


@payments.command("mark-failed")
@_mark_options
def payments_mark_failed(payment_id, reason, key, actor, as_json) -> None:
    """The money did not come (a bounced transfer); it may still be marked paid later."""
    _operate(lambda: _manual().mark_failed(payment_id, reason=reason, key=key, actor=actor or _actor()), as_json)


@payments.command("cancel")
@_mark_options
def payments_cancel(payment_id, reason, key, actor, as_json) -> None:
    """Cancel an unpaid manual payment."""
    _operate(lambda: _manual().cancel(payment_id, reason=reason, key=key, actor=actor or _actor()), as_json)


@payments.command("refund")
@_mark_options
@click.option("--amount", "amount_cents", type=click.IntRange(1), default=None,
              help="How much went back, in minor units (default: all that is left).")
def payments_refund(payment_id, reason, key, actor, as_json, amount_cents) -> None:
    """Refund a paid manual payment, in full or in part; its credits are taken back in proportion."""
    _operate(lambda: _manual().refund(
        payment_id, amount_cents=amount_cents, reason=reason, key=key, actor=actor or _actor(),
    ), as_json)


@payments.command("expire-manual")
@click.option("--dry-run", is_flag=True, help="List what would expire, change nothing.")
def payments_expire_manual(dry_run: bool) -> None:
    """Expire manual payments pending for longer than MANUAL_PAYMENT_EXPIRE_AFTER_DAYS now (the beat does it too)."""
    from datetime import timedelta

    manual = _manual()
    days = manual.tracker.settings.manual_payment_expire_after_days
    expired = manual.expire_overdue(max_age=timedelta(days=days), dry_run=dry_run)
    click.echo(f"{'would expire' if dry_run else 'expired'} {len(expired)} manual payments pending for more than {days} days"
               + (f": {', '.join(map(str, expired))}" if expired else ""))


if __name__ == "__main__":
    main()


# -- outbound webhooks ------------------------------------------------------------------


def _outbound():
    from application.outbound import Outbound
    from models.db import Database

    settings = _settings()
    url = settings.require("database_url", "webhook endpoints live in PostgreSQL")
    return Outbound(Database(url, pool_size=1), settings)


def _send_deliveries(delivery_ids) -> None:
    from workers.celery_app import make_celery
    from workers.queues import DELIVER

    celery = make_celery(_settings())
    for i in range(0, len(delivery_ids), 100):
        chunk = list(delivery_ids[i:i + 100])
        celery.send_task(DELIVER, (chunk,), argsrepr=repr((chunk,)))


def _endpoint_call(fn, *args):
    from application.endpoints import EndpointNotFoundError

    try:
        return fn(*args)
    except (EndpointNotFoundError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None


def _show_endpoint(endpoint: dict) -> None:
    reason = f" ({endpoint['disabled_reason']})" if endpoint["disabled_reason"] else ""
    click.echo(f"{endpoint['id']:>5}  {endpoint['status']:<8} {redact_url(endpoint['url'])}  "
               f"{','.join(endpoint['event_types'])}{reason}")


@main.group()
def endpoints() -> None:
    """Outbound webhook endpoints of the host application."""


@endpoints.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
def endpoints_list(as_json: bool) -> None:
    """Every endpoint, its status and the message types it wants (never its secret)."""
    import json

    found = _endpoint_call(_outbound().endpoints.list)
    if as_json:
        click.echo(json.dumps({"endpoints": found}, indent=2))
        return
    for endpoint in found:
        _show_endpoint(endpoint)
    click.echo(f"{len(found)} endpoints")


@endpoints.command("add")
@click.argument("url")
@click.option("--type", "types", multiple=True, required=True, metavar="TYPE",
              help="A message type it wants (credits.granted, credits.revoked, …; * for all); repeat for more.")
@click.option("--description", default=None)
def endpoints_add(url: str, types: tuple[str, ...], description: str | None) -> None:
    """Add an endpoint; prints its signing secret, once: give it to the receiver now."""
    from pydantic import TypeAdapter, ValidationError

    from receiver.schemas import CreateEndpoint

    try:
        TypeAdapter(CreateEndpoint).validate_python({"url": url, "event_types": list(types), "description": description})
    except ValidationError as exc:
        raise click.ClickException(f"invalid endpoint: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    endpoint, secret = _endpoint_call(_outbound().endpoints.add, url, list(types), description)
    _show_endpoint(endpoint)
    click.echo(f"signing secret (shown once): {secret}")


@endpoints.command("disable")
@click.argument("endpoint_id", type=int)
@click.option("--reason", default=None, help="Kept on the endpoint.")
def endpoints_disable(endpoint_id: int, reason: str | None) -> None:
    """Stop delivering to an endpoint; its messages fail and can be replayed once it is enabled."""
    _show_endpoint(_endpoint_call(_outbound().endpoints.set_enabled, endpoint_id, False, reason))


@endpoints.command("enable")
@click.argument("endpoint_id", type=int)
def endpoints_enable(endpoint_id: int) -> None:
    """Deliver to an endpoint again (then `payhooks outbox replay` what failed meanwhile)."""
    _show_endpoint(_endpoint_call(_outbound().endpoints.set_enabled, endpoint_id, True))


@endpoints.command("rotate-secret")
@click.argument("endpoint_id", type=int)
def endpoints_rotate_secret(endpoint_id: int) -> None:
    """A new signing secret, printed once; the old one signs too for OUTBOUND_SECRET_OVERLAP_SECONDS."""
    endpoint, secret = _endpoint_call(_outbound().endpoints.rotate_secret, endpoint_id)
    click.echo(f"new signing secret (shown once): {secret}")
    click.echo(f"the previous secret is signed with too until {endpoint['previous_secret_expires_at']}")


@endpoints.command("test")
@click.argument("endpoint_id", type=int)
def endpoints_test(endpoint_id: int) -> None:
    """Send a webhook.test message to one endpoint through the workers."""
    delivery_id = _endpoint_call(_outbound().endpoints.test, endpoint_id)
    _send_deliveries([delivery_id])
    click.echo(f"delivery {delivery_id} queued; see `payhooks endpoints deliveries {endpoint_id}`")


@endpoints.command("deliveries")
@click.argument("endpoint_id", type=int)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def endpoints_deliveries(endpoint_id: int, limit: int) -> None:
    """An endpoint's most recent deliveries: message id, type, status, attempts, last error."""
    for d in _endpoint_call(_outbound().endpoints.deliveries, endpoint_id, limit):
        click.echo(f"{d['id']:>7}  {d['message_id']}  {d['type']:<24} {d['status']:<9} "
                   f"attempts {d['attempts']:<3} {d['last_error'] or ''}")


@main.group()
def outbox() -> None:
    """The outbox: what the host application is told."""


@outbox.command("replay")
@click.option("--endpoint", "endpoint_id", type=int, required=True, help="The endpoint to deliver to again.")
@click.option("--message", "message_id", default=None, metavar="MSG_ID",
              help="Just this message (whatever became of it), instead of every failed one.")
@click.option("--since", default=None, metavar="DURATION|ISO", help="Messages written at or after: 2h, 3d, or an ISO time.")
@click.option("--until", default=None, metavar="DURATION|ISO", help="Messages written before: 2h, 3d, or an ISO time.")
@click.option("--dry-run", is_flag=True, help="Count them, replay nothing.")
def outbox_replay(endpoint_id: int, message_id: str | None, since: str | None, until: str | None, dry_run: bool) -> None:
    """Deliver again one message, or every failed delivery to an endpoint over a time range."""
    outbound = _outbound()
    window = {"message_id": message_id, "since": _since(since) if since else None,
              "until": _since(until) if until else None}
    ids = _endpoint_call(lambda: outbound.replayable(endpoint_id, **window))
    if dry_run:
        click.echo(f"{len(ids)} deliveries would be replayed")
        return
    reopened = []
    with click.progressbar(ids, label=f"replaying to endpoint {endpoint_id}", file=sys.stderr) as bar:
        for delivery_id in bar:
            if outbound.reopen(delivery_id):
                reopened.append(delivery_id)
    _send_deliveries(reopened)
    skipped = len(ids) - len(reopened)
    click.echo(f"{len(reopened)} deliveries queued again" + (f" ({skipped} being tried right now, left alone)" if skipped else ""))
