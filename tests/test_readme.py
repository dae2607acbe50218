"""The READMEs say exactly what the command line does.

Every ``paheko-recyclic …`` (or ``python3 dev.py -- …``) command shown in ``README.md`` and
``deploy/README.md`` — code blocks and inline code — is parsed against the click tree, so a renamed
command or option fails here. The README's commands are then *run*, in the README's order, against the
local stand-ins (Paheko over the captured caisse database, Recyclic v2), the way a new operator or
developer following it would: long-running ones (``worker``, ``run``, ``dev …``, ``poll`` without
``--once``, ``demo``) are parsed only, or replaced by the same thing started in-process.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from receiver.app import create_app
from receiver.cli import main
from receiver.config import load_config
from receiver.dev.paheko import create_paheko_app
from receiver.dev.recyclic import MACHINE_USER, create_recyclic_app
from receiver.dev.server import LocalServer
from receiver.services import EXTENSION

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
LONG_RUNNING = {"worker", "run", "dev paheko", "dev recyclic", "demo", "poll"}


def commands_of(markdown: str) -> list[str]:
    """Every command line of the text, in order: ``sh`` blocks (with ``\\`` continuations) and inline code."""
    found: list[tuple[int, str]] = []
    for block in re.finditer(r"```sh\n(.*?)```", markdown, re.S):
        text = block.group(1).replace("\\\n", " ")
        for offset, line in enumerate(text.splitlines()):
            for part in line.split("&&"):
                part = re.sub(r"\s+#.*$", "", part).strip()
                if part:
                    found.append((block.start() + offset, part))
    prose = re.sub(r"```.*?```", lambda m: " " * len(m.group(0)), markdown, flags=re.S)
    for span in re.finditer(r"`([^`\n]+)`", prose):
        found.append((span.start(), span.group(1).strip()))
    lines = []
    for _, line in sorted(found):
        line = re.sub(r"\$\([^)]*\)", "X", line)  # $(date +%F) and the like: one word
        installed = re.search(r"(?:^|\s)/\S*/bin/paheko-recyclic( .*)?$", line)
        if installed:  # sudo -u paheko-recyclic /opt/…/venv/bin/paheko-recyclic --config …
            line = "paheko-recyclic" + (installed.group(1) or "")
        words = line.split()
        if words[:3] == ["python3", "dev.py", "--"]:
            line = " ".join(["paheko-recyclic", *words[3:]])
        elif words[:2] == ["python3", "dev.py"] and words[2:3] != ["test"]:
            line = " ".join(["paheko-recyclic", *words[2:]])
        if re.match(r"(\w+=\S+ )*paheko-recyclic ", line) and "|" not in line and " COMMAND" not in line:
            lines.append(line)
    return lines


def resolve(argv: list[str]) -> tuple[str, click.Command, click.Context]:
    """Parse ``argv`` (after ``paheko-recyclic``) like click would; raise click's error on drift."""
    ctx = main.make_context("paheko-recyclic", list(argv))
    command: click.Command = main
    path: list[str] = []
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            break
        name, command, rest = command.resolve_command(ctx, rest)
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
    return " ".join(path), command, ctx


def split(line: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(line)
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words[0] == "paheko-recyclic"
    return env, words[1:]


@pytest.mark.parametrize("readme", ["README.md", "deploy/README.md"])
def test_every_command_in_the_readmes_parses(readme):
    lines = commands_of((ROOT / readme).read_text(encoding="utf-8"))
    assert len(lines) >= (20 if readme == "README.md" else 4), lines
    for line in lines:
        _, argv = split(line.replace("NAME:SESSION", "lab:1"))
        try:
            resolve(argv)
        except click.exceptions.Exit:
            pass
        except click.ClickException as exc:
            pytest.fail(f"{readme}: `{line}` no longer matches the command line: {exc.format_message()}")


@pytest.fixture
def standins(tmp_path):
    db = tmp_path / "paheko.sqlite"
    shutil.copy(FIXTURES / "paheko-caisse.sqlite", db)
    paheko = LocalServer(create_paheko_app(str(db), {"demo": ("demo", "read")})).start()
    recyclic = LocalServer(create_recyclic_app("v2")).start()
    yield paheko, recyclic
    recyclic.stop()
    paheko.stop()


def test_the_readme_walkthrough_runs_against_the_stand_ins(tmp_path, standins, monkeypatch):
    paheko, recyclic = standins
    monkeypatch.chdir(tmp_path)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    developers = readme.index("## For developers")
    # A developer's section sets dev.toml up against the stand-ins; the operators' commands then run on it.
    lines = commands_of(readme[developers:]) + commands_of(readme[:developers])
    dev_toml, config = tmp_path / "dev.toml", tmp_path / "etc" / "config.toml"
    config.parent.mkdir()
    receiver = None
    substitutions = {
        "http://127.0.0.1:8081": paheko.url, "http://127.0.0.1:8082/v1": f"{recyclic.url}/v1",
        "/etc/paheko-recyclic/config.toml": str(config), "tests/fixtures/": f"{FIXTURES}/",
        "--output dist": f"--output {tmp_path / 'dist'}", "NAME:SESSION": "lab:1", "NAME": "lab",
        "URL": f"{recyclic.url}/v1", "USER": MACHINE_USER.username, "PASSWORD": MACHINE_USER.password,
        " config.toml": f" {tmp_path / 'config.toml'}",
    }
    ran: list[str] = []
    try:
        for line in lines:
            for old, new in substitutions.items():
                line = line.replace(old, new)
            env, argv = split(line)
            path, _, _ = resolve(argv)
            if path in LONG_RUNNING and "--once" not in argv:
                if path == "run" and receiver is None:  # the developer's receiver, started in-process instead
                    app = create_app(load_config(dev_toml))
                    receiver = (LocalServer(app).start(), app)
                    substitutions["http://127.0.0.1:8000"] = receiver[0].url
                continue
            if path == "init" and Path(argv[1]).exists():
                continue  # the same file shown twice (operators' block, then the guide)
            env.setdefault("PAHEKO_RECYCLIC_CONFIG", str(dev_toml))
            used = argv[argv.index("--config") + 1] if "--config" in argv else env["PAHEKO_RECYCLIC_CONFIG"]
            result = CliRunner().invoke(main, argv, env=env)
            ran.append(path)
            if path == "check-config" and used != str(dev_toml) and result.exit_code == 1:
                assert "placeholder" in result.output, result.output  # a fresh `init` file, before editing
            elif path == "mapping check" and result.exit_code == 1:
                assert "unmapped:" in result.output, result.output  # "until nothing is unmapped"
            else:
                assert result.exit_code == 0, f"`{line}` → {result.exit_code}\n{result.output}"
            if path == "init" and argv[1] == "dev.toml":
                # the README's next step: append its toml block (the sink towards the local Recyclic)
                [sink] = re.findall(r"```toml\n(\[sources\.lab\.sink\].*?)```", readme, re.S)
                for old, new in substitutions.items():
                    sink = sink.replace(old, new)
                dev_toml.write_text(dev_toml.read_text() + "\n" + sink)
            if path == "mapping suggest" and "[sources.lab.mapping]" not in dev_toml.read_text():  # "paste it"
                dev_toml.write_text(dev_toml.read_text() + "\n" + result.output)
    finally:
        if receiver is not None:
            receiver[0].stop()
            receiver[1].extensions[EXTENSION].ledger.close()
    assert receiver is not None
    for needed in ("init", "check-config", "mapping suggest", "mapping check", "replay", "worker", "status",
                   "ledger show", "ledger release", "ledger retry", "backfill", "poll", "module build",
                   "module lint"):
        assert needed in ran, (needed, ran)
