"""The ``paheko-recyclic`` command: one plain click application holding the project's own commands.

The configuration comes from ``--config FILE`` or ``$PAHEKO_RECYCLIC_CONFIG``; commands that need the
receiver's services (ledger, metrics) build the app on first use (:mod:`receiver.commands.context`).
Logs go to stderr, the commands' own output to stdout.
"""

from __future__ import annotations

import os
import re
import secrets
import string
import sys
from importlib import resources
from pathlib import Path

import click

from receiver import __version__
from receiver.commands.context import config_path, remember_config
from receiver.commands.examples import add_examples
from receiver.config import CONFIG_ENV, ConfigError, parse_config, read_document


class ReceiverGroup(click.Group):
    """Commands listed in alphabetical order, every one with an example."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)


@click.group(cls=ReceiverGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    metavar="FILE",
    expose_value=False,
    is_eager=True,
    callback=remember_config,
    help=f"Configuration file (TOML). Default: ${CONFIG_ENV}. Create one with `paheko-recyclic init`.",
)
@click.version_option(__version__, "--version", prog_name="paheko-recyclic")
def main() -> None:
    """Carry closed Paheko caisse sessions to Recyclic, exactly once.

    \b
    Quick start:
      paheko-recyclic init config.toml              write a commented configuration
      paheko-recyclic --config config.toml check-config
      paheko-recyclic --config config.toml run      serve the receiver (waitress, as deployed)
      paheko-recyclic demo                          everything, locally, on bundled data
    """


def _token(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def render_example_config(**values: str) -> str:
    """The commented example configuration, with fresh webhook credentials unless given."""
    template = resources.files("receiver").joinpath("example_config.toml").read_text(encoding="utf-8")
    defaults = {
        "webhook_user": "paheko" + _token(6).lower(),
        "webhook_password": _token(32),
        "paheko_url": "https://paheko.example.org",
        "paheko_user": "recyclic-bridge",
        "paheko_password": "change-me",
    }
    return string.Template(template).substitute({**defaults, **values})


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="paheko-recyclic.toml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--paheko-url", metavar="URL", help="The organisation's Paheko address (default: a placeholder to replace).")
@click.option("--paheko-user", metavar="NAME", help="Its read-only API key's name.")
@click.option("--paheko-password", metavar="SECRET", envvar="PAHEKO_API_PASSWORD",
              help="That key's secret (or $PAHEKO_API_PASSWORD). Production: move it to an env file after.")
def init(path: Path, force: bool, paheko_url: str | None, paheko_user: str | None, paheko_password: str | None) -> None:
    """Write a commented example configuration to PATH (default: paheko-recyclic.toml).

    The webhook password is freshly generated; copy it into the Paheko module's settings. Values not
    given stay placeholders that `check-config` points out until they are replaced.
    """
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists already (use --force to overwrite it)")
    given = {"paheko_url": paheko_url, "paheko_user": paheko_user, "paheko_password": paheko_password}
    path.write_text(render_example_config(**{k: v for k, v in given.items() if v}), encoding="utf-8")
    try:
        path.chmod(0o600)
    except OSError:
        pass
    click.echo(f"Wrote {path}. Edit it, then run: paheko-recyclic --config {path} check-config")


#: Values `init` writes for the operator to replace; a configuration still holding one is not ready.
PLACEHOLDERS = ("example.org", "example.com", "example.net", "change-me")


def placeholder_problems(document: object, prefix: str = "") -> list[str]:
    """Every value of the parsed TOML document still holding a placeholder of the example."""
    problems: list[str] = []
    if isinstance(document, dict):
        for key, value in document.items():
            problems += placeholder_problems(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            problems += placeholder_problems(value, f"{prefix}[{index}]")
    elif isinstance(document, str):
        text = document.strip()
        if any(p in text.lower() for p in PLACEHOLDERS) or (text.startswith("<") and text.endswith(">")):
            secret = re.search(r"(password|secret|token|pin)$", prefix)
            shown = "" if secret else f" {text!r}"  # even a placeholder secret is never printed
            problems.append(f"{prefix}: still the example's placeholder{shown}: put the real value")
    return problems


@main.command("check-config")
@click.option("--online", is_flag=True, help="Also reach each source's Paheko (SELECT 1 through /api/sql) and its sink.")
def check_config(online: bool) -> None:
    """Validate the configuration and print every problem at once (exit 1 if any).

    Problems include values left from `init`'s example (example.org addresses, "change-me").
    With --online, each Paheko and each sink is contacted too; nothing is written anywhere.
    """
    placeholders: list[str] = []
    try:
        file, document = read_document(config_path())
        placeholders = placeholder_problems(document)
        config = parse_config(document, file.resolve())
    except ConfigError as exc:
        problems = sorted({*exc.problems, *placeholders})
        click.echo(f"Configuration {exc.path or ''} has {len(problems)} problem(s):", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(1)
    click.echo(f"Configuration {config.path}:")
    click.echo(f"  ledger: {_redact_url(config.receiver.ledger_url)}")
    for warning in proxy_warnings(config):
        click.echo(f"  warning: {warning}", err=True)
    problems = list(placeholders)
    for source in config.sources.values():
        click.echo(
            f"  source {source.name}: Paheko {source.paheko.url} (key {source.paheko.api_user}), "
            f"webhook user {source.webhook[0].user}, time zone {source.timezone.key}"
        )
        m = source.mapping
        click.echo(f"    mapping: profile {m.profile}, {len(m.locations)} location(s), {len(m.categories)} "
                   f"category(ies), {len(m.methods)} method(s); sink: {_sink_label(source.sink)}")
        for finding in _mapping_findings(source):
            click.echo(f"    {finding.level}: {finding.text}")
            if finding.level == "problem":
                problems.append(f"sources.{source.name}.mapping: {finding.text} "
                                f"(`paheko-recyclic mapping check --source {source.name}` verifies it against Paheko and Recyclic)")
    if online:
        from receiver.commands.online import check_online

        for source in config.sources.values():
            for line, ok in check_online(source):
                click.echo(f"  {'ok ' if ok else 'FAIL'} {source.name}: {line}")
                if not ok:
                    problems.append(f"sources.{source.name}: {line}")
    if problems:
        click.echo(f"{len(problems)} problem(s):", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(1)
    click.echo("The configuration is valid." + (" Paheko and the sinks answer." if online else ""))


def _mapping_findings(source):
    from receiver.sinks.recyclic.config import RecyclicSinkConfig
    from receiver.sinks.recyclic.mapping.check import settings_findings

    sink = source.sink if isinstance(source.sink, RecyclicSinkConfig) else None
    return settings_findings(source.mapping, pin_configured=None if sink is None else sink.pin is not None)


def _sink_label(sink: object) -> str:
    from receiver.sinks.registry import kind_of

    return kind_of(sink) if sink else "none configured (sessions wait until a [sink] table is added)"


@main.command("run")
@click.option("--bind", metavar="HOST:PORT", default=None,
              help="Address to listen on. Default: $PAHEKO_RECYCLIC_BIND, else 127.0.0.1:8000.")
@click.option("--threads", type=click.IntRange(1, 64), default=None,
              help="Application threads. Default: $PAHEKO_RECYCLIC_WEB_THREADS, else 8.")
def run(bind: str | None, threads: int | None) -> None:
    """Serve the receiver (waitress): the same server in development and in production.

    Requests are read whole by the I/O loop before a thread handles them, so slow or stalled
    clients cost no thread; see receiver/serve.py and deploy/README.md. SIGTERM or Ctrl-C stops it.
    """
    from receiver.commands.context import current_app
    from receiver.serve import ServeOptions, serve

    app = current_app()
    options = ServeOptions.from_environment(app.config["MAX_CONTENT_LENGTH"], bind=bind, threads=threads)
    serve(app, options)


def proxy_warnings(config, bind: str | None = None) -> list[str]:
    """What ``check-config`` says about ``trusted_proxies`` for the address the receiver will listen on."""
    import ipaddress

    from receiver.proxies import parse_networks
    from receiver.serve import BIND_ENV, DEFAULT_BIND

    bind = bind or os.environ.get(BIND_ENV) or DEFAULT_BIND
    host = bind.rsplit(":", 1)[0].strip("[]") if ":" in bind else bind
    try:
        behind_proxy = ipaddress.ip_address(host).is_loopback
    except ValueError:
        behind_proxy = host == "localhost"
    networks = parse_networks(config.receiver.trusted_proxies)
    warnings = []
    if behind_proxy and not networks:
        warnings.append(
            f"the receiver listens on {bind} (loopback), so a reverse proxy forwards to it, but "
            "[receiver] trusted_proxies is empty: every Paheko seems to come from the proxy's address, "
            'and one scanner there throttles them all. Set trusted_proxies = ["127.0.0.1", "::1"].')
    for network in networks:
        if network.prefixlen == 0:
            warnings.append(f"trusted_proxies contains {network}: any client could then choose its address "
                            "with X-Forwarded-For; list only your proxies' addresses.")
    return warnings


def _redact_url(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.group(cls=ReceiverGroup)
def dev() -> None:
    """Local stand-ins of Paheko and Recyclic, for tests, demos and replaying a backup."""


def _register_subcommands() -> None:
    from receiver.commands import ledger, maintenance, pipeline, replay
    from receiver.commands.report import report
    from receiver.demo import demo
    from receiver.dev.paheko import paheko_command
    from receiver.dev.recyclic import recyclic_command
    from receiver.sinks.recyclic.mapping.cli import mapping_group
    from receiver.module.cli import module_group

    main.add_command(ledger.ledger_group)
    main.add_command(replay.replay)
    main.add_command(report)
    for command in (pipeline.poll, pipeline.worker, pipeline.status, pipeline.backfill):
        main.add_command(command)
    main.add_command(demo)
    main.add_command(module_group)
    main.add_command(maintenance.maintenance_group)
    main.add_command(mapping_group)
    dev.add_command(paheko_command)
    dev.add_command(recyclic_command)
    add_examples(main)


_register_subcommands()
