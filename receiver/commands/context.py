"""What every command needs from the invocation: the configuration file and the app's services."""

from __future__ import annotations

import click
from flask.cli import ScriptInfo

from receiver.config import Config, ConfigError, load_config


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


def current_app_services():
    """The services of the CLI's app (ledger, config, metrics), loading the app on first use."""
    from receiver.services import EXTENSION

    info = click.get_current_context().ensure_object(ScriptInfo)
    return info.load_app().extensions[EXTENSION]
