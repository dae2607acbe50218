"""``paheko-recyclic maintenance …``: back up, restore and prune the ledger."""

from __future__ import annotations

from pathlib import Path

import click

from receiver.commands.context import config_from_context, progress_bar
from receiver.ledger.maintenance import MaintenanceError, backup, prune_raw_bodies, restore
from receiver.ledger.store import Ledger


@click.group("maintenance")
def maintenance_group() -> None:
    """Back up, restore and prune the ledger."""


def _run(operation, *args, label: str, **kwargs):
    """Run a maintenance operation with a progress bar on stderr (pages copied, rows pruned)."""
    with progress_bar(length=1, label=label, show_percent=True) as bar:
        def progress(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        try:
            return operation(*args, progress=progress, **kwargs)
        except MaintenanceError as exc:
            raise click.ClickException(str(exc)) from None


@maintenance_group.command("backup")
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace DESTINATION if it exists.")
def backup_command(destination: Path, force: bool) -> None:
    """Copy the SQLite ledger to DESTINATION while everything keeps running."""
    copied = _run(backup, config_from_context().receiver.ledger_url, destination, force=force, label="Copying")
    click.echo(f"Backed up the ledger (schema {copied.schema_version}, {copied.entries} entries) to {copied.path}.")


@maintenance_group.command("restore")
@click.argument("backup_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite the existing ledger (stop the receiver and the worker first).")
def restore_command(backup_file: Path, force: bool) -> None:
    """Restore the SQLite ledger from FILE (a `maintenance backup`), then migrate it."""
    restored, safety = _run(restore, backup_file, config_from_context().receiver.ledger_url, force=force,
                            label="Restoring")
    if safety:
        click.echo(f"The previous ledger was copied to {safety}.")
    click.echo(f"Restored {restored.path} (schema {restored.schema_version}, {restored.entries} entries).")


@maintenance_group.command("prune")
@click.option("--days", type=click.IntRange(min=1), help="Keep raw bodies this many days. "
              "Default: [receiver] raw_body_retention_days (30).")
def prune_command(days: int | None) -> None:
    """Forget the raw bodies of old notifications (their figures and history stay)."""
    config = config_from_context()
    days = days or config.receiver.raw_body_retention_days
    ledger = Ledger(config.receiver.ledger_url)
    try:
        ledger.migrate()
        cleared = _run(prune_raw_bodies, ledger, days, label="Pruning")
    finally:
        ledger.close()
    click.echo(f"Cleared the raw body of {cleared} notification(s) older than {days} days.")
