"""``paheko-recyclic mapping suggest|check``: fill in and verify a source's mapping against Paheko."""

from __future__ import annotations

import click

from receiver.config import Secret, Source
from receiver.sinks.recyclic.client import RecyclicClient, RecyclicError, RecyclicRefused
from receiver.sinks.recyclic.config import RecyclicSinkConfig
from receiver.sinks.recyclic.mapping.suggest import RecyclicNames, read_paheko_names, render_suggestion, unmapped
from receiver.reread.client import PahekoClient, PahekoError


@click.group("mapping")
def mapping_group() -> None:
    """Relate a source's Paheko names (locations, operators, categories, methods) to Recyclic ids."""


def _source(name: str) -> Source:
    from receiver.commands.context import config_from_context

    config = config_from_context()
    if name not in config.sources:
        raise click.ClickException(f"no source {name!r} in the configuration (known: {', '.join(config.sources)})")
    return config.sources[name]


def _paheko_names(source: Source):
    try:
        with PahekoClient(source.name, source.paheko) as client:
            return read_paheko_names(client, source.paheko.first_session)
    except PahekoError as exc:
        raise click.ClickException(f"cannot read Paheko's reference data: {exc}") from None


@mapping_group.command("suggest")
@click.option("--source", "name", required=True, help="The source (a [sources.NAME] table).")
@click.option("--recyclic-url", help="Recyclic's API base URL, e.g. https://recyclic.example.org/api/v1.")
@click.option("--recyclic-user", help="A Recyclic admin user, to read categories, sites and registers.")
@click.option("--recyclic-password", envvar="RECYCLIC_PASSWORD", help="Its password (or $RECYCLIC_PASSWORD).")
def suggest(name: str, recyclic_url: str | None, recyclic_user: str | None, recyclic_password: str | None) -> None:
    """Print a [sources.NAME.mapping] section to review: current entries kept, the rest pre-filled."""
    source = _source(name)
    recyclic = None
    if recyclic_url or recyclic_user or recyclic_password:
        if not (recyclic_url and recyclic_user and recyclic_password):
            raise click.UsageError("--recyclic-url, --recyclic-user and --recyclic-password go together")
        recyclic = _recyclic_names(recyclic_url, recyclic_user, recyclic_password)
    click.echo(render_suggestion(name, _paheko_names(source), source.mapping, recyclic), nl=False)


def _recyclic_names(url: str, user: str, password: str) -> RecyclicNames:
    config = RecyclicSinkConfig(url=url.rstrip("/"), username=user, password=Secret(password))
    try:
        with RecyclicClient(config) as client:
            categories = [c for c in client.categories() if c.is_active]
            registers = client.registers()
            methods = client.payment_methods()
            return RecyclicNames(
                categories=tuple((c.id, c.name) for c in categories),
                sites=tuple((s.id, s.name) for s in client.sites()),
                registers=tuple((r.id, r.name, r.site_id) for r in registers),
                payment_codes=tuple(m.code.lower() for m in methods),
                parents={c.id: c.parent_id for c in categories},
                deferred=frozenset(r.id for r in registers if r.enable_deferred),
                labels={m.code.lower(): m.label for m in methods},
                users=tuple((u.id, u.username, u.role or "") for u in _users(client)),
                machine_user=user,
            )
    except RecyclicError as exc:
        raise click.ClickException(f"cannot read Recyclic's reference data: {exc}") from None


def _users(client: RecyclicClient):
    try:
        return client.users()
    except RecyclicRefused as exc:  # Recyclic 1.3 or a narrower role: no user listing, no proposal
        if exc.status in (404, 405):
            return []
        raise


@mapping_group.command("check")
@click.option("--source", "name", required=True, help="The source (a [sources.NAME] table).")
def check(name: str) -> None:
    """List the Paheko names the mapping lacks; exit status 1 if there is any."""
    source = _source(name)
    missing = unmapped(_paheko_names(source), source.mapping)
    for line in missing:
        click.echo(f"unmapped: {line}")
    if missing:
        raise click.exceptions.Exit(1)
    click.echo(f"The mapping of source {name!r} covers every location, operator, category and payment method.")
