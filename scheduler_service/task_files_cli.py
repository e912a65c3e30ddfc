"""``flask tasks export`` and ``flask tasks apply``: tasks kept as a YAML file (the rules: task_files.py)."""
from __future__ import annotations

import os
from typing import BinaryIO

import click
from flask.cli import with_appcontext
from sqlalchemy.exc import IntegrityError

from .extensions import db
from .task_files import InvalidDocument, dump_yaml, load_yaml
from .task_files_store import Change, apply_document, export_stored

PAST = {"create": "created", "update": "updated", "delete": "deleted"}


@click.group("tasks")
def tasks_group() -> None:
    """Keep tasks as a YAML file: export them, apply a file."""


@tasks_group.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--with-secrets", is_flag=True,
              help="Write header and env values and webhook paths in clear (else as \"***\").")
@with_appcontext
def export_command(file: str | None, with_secrets: bool) -> None:
    """Write every task as YAML to FILE (default: stdout)."""
    document = export_stored(with_secrets)
    text = dump_yaml(document)
    if file in (None, "-"):
        click.echo(text, nl=False)
        return
    _write_file(file, text, private=with_secrets)
    click.echo(f"exported {len(document['tasks'])} tasks to {file}")


def _write_file(path: str, text: str, private: bool) -> None:
    # A file holding secrets is readable by its owner only, from the moment it exists.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            if private:
                os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None


@tasks_group.command("apply")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--prune", is_flag=True, help="Also delete the tasks the file does not name.")
@with_appcontext
def apply_command(file: BinaryIO, dry_run: bool, prune: bool) -> None:
    """Make the tasks match FILE: create, change and (with --prune) delete; all or nothing."""
    name = getattr(file, "name", "-")
    try:
        changes = apply_document(load_yaml(file.read()), dry_run=dry_run, prune=prune)
    except InvalidDocument as exc:
        lines = [problem.line() for problem in exc.problems]
        raise click.ClickException("\n".join([f"{name} is invalid; nothing was changed.", *lines])) from None
    except IntegrityError:
        # Another writer created one of these names meanwhile; the transaction was not committed.
        db.session.rollback()
        raise click.ClickException("the tasks changed while applying; nothing was changed: run it again") from None
    for change in changes:
        click.echo(change.line())
    click.echo(_summary(changes, dry_run))


def _summary(changes: list[Change], dry_run: bool) -> str:
    if not changes:
        return "no changes"
    counts = {kind: sum(change.change == kind for change in changes) for kind in PAST}
    said = [f"{count} {f'to {kind}' if dry_run else PAST[kind]}" for kind, count in counts.items() if count]
    return f"dry run: {', '.join(said)}; nothing was changed" if dry_run else f"applied: {', '.join(said)}"
