"""CLI commands: run-scheduler, create-token, revoke-token, and the `tasks` group (task_files_cli.py)."""
from __future__ import annotations

import logging

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import with_appcontext

from . import auth
from .config import ConfigError
from .extensions import db, scheduler
from .models import TOKEN_SCOPES, ApiToken
from .task_files_cli import tasks_group


@click.command("run-scheduler")
@with_appcontext
def run_scheduler_command() -> None:
    """Run the scheduler in the foreground until SIGINT/SIGTERM (no HTTP)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        scheduler.run_forever(current_app._get_current_object())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("create-token")
@click.argument("name")
@click.option("--scope", type=click.Choice(TOKEN_SCOPES), default="admin", show_default=True,
              help="What the token may do: read < run < write < admin (README, 'Security').")
@click.option("--if-none", is_flag=True, help="Only if no token exists yet (for first start-up scripts).")
@with_appcontext
def create_token_command(name: str, scope: str, if_none: bool) -> None:
    """Create an API token NAME and print it as the last line; only its hash is kept."""
    if if_none and db.session.execute(sa.select(ApiToken.id).limit(1)).first() is not None:
        click.echo("an API token exists already; not creating another", err=True)
        return
    if db.session.execute(sa.select(ApiToken.id).where(ApiToken.name == name)).first() is not None:
        raise click.ClickException(f"a token named {name!r} exists; revoke it first")
    token = auth.issue_token(name, scope)
    click.echo(f"Created API token {name!r} with scope {scope!r}. Keep it now: it is not stored and cannot be"
               " shown again.")
    click.echo(token)


@click.command("revoke-token")
@click.argument("name")
@with_appcontext
def revoke_token_command(name: str) -> None:
    """Revoke the API token NAME."""
    if not auth.revoke_token(name):
        raise click.ClickException(f"no token named {name!r}")
    click.echo(f"Revoked API token {name!r}.")


def init_app(app: Flask) -> None:
    for command in (run_scheduler_command, create_token_command, revoke_token_command, tasks_group):
        app.cli.add_command(command)
