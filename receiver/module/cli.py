"""``paheko-recyclic module …``: lint and package the Paheko module."""

from __future__ import annotations

from pathlib import Path

import click

from receiver.module.build import MODULE_NAME, BuildError, build_zip, default_source
from receiver.module.lint import check_path


@click.group("module")
def module_group() -> None:
    """Check and package the Paheko (Brindille) module."""


@module_group.command("lint")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--name", help="Technical name to check (default: the folder's name).")
def lint_command(path: Path | None, name: str | None) -> None:
    """Check PATH: a template, a module folder or a folder of modules (default: this project's module)."""
    if path is None:
        try:
            path, name = default_source(), name or MODULE_NAME
        except BuildError as exc:
            raise click.ClickException(str(exc)) from None
    problems = check_path(path, name)
    for problem in problems:
        click.echo(str(problem))
    errors = sum(problem.is_error for problem in problems)
    summary = f"{path}: {errors} error(s), {len(problems) - errors} warning(s)"
    if errors:
        click.echo(summary, err=True)
        raise SystemExit(1)
    click.echo(summary)


@module_group.command("build")
@click.option("--output", "-o", "output", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"),
              show_default=True, help="Folder receiving the ZIP.")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Module source folder (default: this project's paheko_module/).")
def build_command(output: Path, source: Path | None) -> None:
    """Write the ZIP to import in Paheko (Configuration › Extensions › Importer)."""
    try:
        click.echo(str(build_zip(output, source)))
    except BuildError as exc:
        raise click.ClickException(str(exc)) from None
