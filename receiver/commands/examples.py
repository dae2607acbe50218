"""One example per command, shown at the end of its ``--help``.

Kept in one table so that ``tests/test_cli.py`` can check that every command has one and that each
example still parses against the command it documents (options renamed → the test fails).
"""

from __future__ import annotations

import click

C = "paheko-recyclic --config config.toml"

#: command path (without ``paheko-recyclic``) → example command lines
EXAMPLES: dict[str, tuple[str, ...]] = {
    "init": ("paheko-recyclic init /etc/paheko-recyclic/config.toml",),
    "check-config": (f"{C} check-config", f"{C} check-config --online"),
    "run": (f"{C} run", f"{C} run --bind 127.0.0.1:8000 --threads 8"),
    "demo": ("paheko-recyclic demo", "paheko-recyclic demo --workdir /tmp/demo"),
    "replay": (f"{C} replay tests/fixtures/module-request.http --to http://127.0.0.1:8000 --source lab",),
    "poll": (f"{C} poll --once --source lab", f"{C} poll"),
    "worker": (f"{C} worker", f"{C} worker --once"),
    "status": (f"{C} status",),
    "backfill": (f"{C} backfill --source lab --since 2026-01-01", f"{C} backfill --source lab --since 2026-01-01 --until 2026-01-31"),
    "ledger": (f"{C} ledger list --state held", f"{C} ledger show lab:2"),
    "ledger list": (f"{C} ledger list --source lab --state held --state failed",),
    "ledger show": (f"{C} ledger show lab:2", f"{C} ledger show 12 --raw"),
    "ledger retry": (f"{C} ledger retry --state failed --state dead", f"{C} ledger retry lab:2"),
    "ledger release": (f"{C} ledger release --source lab --state held", f"{C} ledger release lab:2"),
    "ledger hold": (f"{C} ledger hold lab:2 --reason \"Vérification en cours.\"",),
    "maintenance": (f"{C} maintenance backup /var/backups/ledger.sqlite",),
    "maintenance backup": (f"{C} maintenance backup /var/backups/paheko-recyclic/ledger.sqlite",),
    "maintenance restore": (f"{C} maintenance restore /var/backups/paheko-recyclic/ledger.sqlite --force",),
    "maintenance prune": (f"{C} maintenance prune --days 30",),
    "mapping": (f"{C} mapping check --source lab",),
    "mapping suggest": (f"RECYCLIC_PASSWORD=… {C} mapping suggest --source lab "
                        "--recyclic-url https://recyclic.example.org/api/v1 --recyclic-user paheko-bridge",),
    "mapping check": (f"{C} mapping check --source lab",),
    "module": ("paheko-recyclic module lint", "paheko-recyclic module build --output dist"),
    "module lint": ("paheko-recyclic module lint paheko_module",),
    "module build": ("paheko-recyclic module build --output dist",),
    "dev": ("paheko-recyclic dev paheko --db tests/fixtures/paheko-caisse.sqlite", "paheko-recyclic dev recyclic"),
    "dev paheko": ("paheko-recyclic dev paheko --db tests/fixtures/paheko-caisse.sqlite --port 8081",),
    "dev recyclic": ("paheko-recyclic dev recyclic --profile v2 --port 8082",),
}


def walk(group: click.Command, prefix: str = ""):
    """Every (path, command) of the tree, the root included as ``""``."""
    yield prefix, group
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            yield from walk(command, f"{prefix} {name}".strip())


def add_examples(root: click.Group) -> None:
    """Append each command's examples to its help (commands whose help has one already are left alone)."""
    for path, command in walk(root):
        lines = EXAMPLES.get(path)
        if lines and "Example" not in (command.help or ""):
            label = "Example" if len(lines) == 1 else "Examples"
            command.epilog = "\b\n" + f"{label}:\n" + "\n".join(f"  {line}" for line in lines)
