"""``flask create-admin NAME``: an account for the admin pages (the password is prompted or read from stdin)."""
from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from .accounts import AccountError, create_admin, find_admin, set_password


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line; scripts pipe it in (`printf '%s\n' "$PW" | flask create-admin ops --password-stdin`).
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@click.command("create-admin")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--reset-password", is_flag=True, help="Give the existing admin NAME a new password.")
@with_appcontext
def create_admin_command(name: str, password_stdin: bool, reset_password: bool) -> None:
    """Create an admin user NAME for /admin/ (only a salted hash of the password is stored)."""
    try:
        if reset_password:
            user = find_admin(name.strip())
            if user is None:
                raise AccountError(f"no admin named {name!r}")
            set_password(user, _read_password(password_stdin))
            click.echo(f"Changed the password of admin {user.name!r}; their open sessions are logged out.")
            return
        if find_admin(name.strip()) is not None:  # say so before asking for a password
            raise AccountError(f"an admin named {name.strip()!r} exists already (use --reset-password to change it)")
        user = create_admin(name, _read_password(password_stdin))
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Created admin {user.name!r}. Log in at /admin/.")
