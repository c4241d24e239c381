"""The ``payhooks`` command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click

from workers.settings import Settings, SettingsError, redact_url

DEV_WEBHOOK_SECRET = "whsec_payhooks_dev"
DEV_API_TOKEN = "dev-token"
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
    from workers.migrate import upgrade

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
            from workers.embedded import EmbeddedPostgres

            click.echo(f"DATABASE_URL not set: starting PostgreSQL under {var / 'pg'}")
            postgres = EmbeddedPostgres(var / "pg").start()
            embedded.append(postgres)
            env["DATABASE_URL"] = postgres.url
        if not env.get("REDIS_URL"):
            from workers.embedded import EmbeddedRedis

            redis_server = EmbeddedRedis(var / "redis").start()
            embedded.append(redis_server)
            env["REDIS_URL"] = redis_server.url
            click.echo(f"REDIS_URL not set: started Redis (AOF on) at {redis_server.url}")
        if embedded:
            _fill_dev_secrets(env)
        env.setdefault("PORT", "8000")

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
    """Development defaults so the README's curl example works out of the box."""
    for name, value in (("STRIPE_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET), ("API_TOKEN", DEV_API_TOKEN)):
        if not env.get(name):
            env[name] = value
            click.echo(f"{name} not set: using the development value {value!r}")


if __name__ == "__main__":
    main()
