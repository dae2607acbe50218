"""What every command needs from the invocation: the configuration file and the app's services."""

from __future__ import annotations

import contextlib
import logging
import sys

import click

from receiver.config import Config, ConfigError, load_config

_APP = "paheko_recyclic.app"


def remember_config(ctx: click.Context, _param, value: str | None) -> str | None:
    """``--config`` callback: keep the path in the context shared by every sub-command."""
    ctx.meta["config_path"] = value
    return value


def config_path() -> str | None:
    """``--config`` if given, else ``None`` so that :func:`load_config` reads ``$PAHEKO_RECYCLIC_CONFIG``."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get("config_path") if ctx else None


def config_from_context() -> Config:
    """Load the configuration for a command, turning problems into a readable CLI error."""
    try:
        return load_config(config_path())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def current_app():
    """The receiver app for this invocation, built once (migrating the ledger) and closed with it."""
    from receiver.app import create_app
    from receiver.services import EXTENSION

    ctx = click.get_current_context()
    app = ctx.meta.get(_APP)
    if app is None:
        app = ctx.meta[_APP] = create_app(config_from_context())
        ctx.find_root().call_on_close(app.extensions[EXTENSION].ledger.close)
    return app


def current_app_services():
    """The services of the CLI's app (ledger, config, metrics), loading the app on first use."""
    from receiver.services import EXTENSION

    return current_app().extensions[EXTENSION]


@contextlib.contextmanager
def progress_bar(iterable=None, **kwargs):
    """``click.progressbar`` on stderr. While it is drawn on a terminal, the receiver's info logs (which
    would break the bar's line) are held back; warnings and errors still show."""
    stream = sys.stderr
    visible = stream.isatty()
    logger = logging.getLogger("receiver")
    level = logger.level
    if visible and logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        with click.progressbar(iterable, file=stream, **kwargs) as bar:
            yield bar
    finally:
        logger.setLevel(level)


def source_named(sources: dict, name: str | None, *, only_one: bool = False,
                 error: type[click.ClickException] = click.ClickException):
    """The configured source ``name``, else ``error``; without a name, the only source when ``only_one``."""
    if name is None and only_one:
        if len(sources) != 1:
            raise click.UsageError(f"--source is needed: one of {', '.join(sorted(sources))}.")
        name = next(iter(sources))
    if name not in sources:
        raise error(f"no source {name!r} in the configuration (known: {', '.join(sources)})")
    return sources[name]
