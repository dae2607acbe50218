"""``paheko-recyclic replay``: send a notification exactly as the Paheko module does."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx

DEFAULT_PATH = "paheko/caisse/v1/session-closed"
#: Paheko's client sends a random browser User-Agent; this is the one of the lab capture.
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Ubuntu Chromium/48.0.2564.116 Chrome/48.0.2564.116 Safari/537.36"
)


@dataclass
class CapturedRequest:
    """A request as the module sends it: method, path after ``/api/``, headers, body bytes."""

    path: str
    body: bytes
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse_http(cls, data: bytes) -> "CapturedRequest":
        """Parse a captured ``.http`` request (request line, headers, blank line, body)."""
        head, _, body = data.replace(b"\r\n", b"\n").partition(b"\n\n")
        request_line, *header_lines = head.decode("latin-1").split("\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        if not target.startswith("/api/"):
            raise click.ClickException(f"the captured request targets {target!r}, not /api/…")
        length = headers.get("Content-Length")
        return cls(path=target[len("/api/"):], body=body[: int(length)] if length else body, method=method, headers=headers)

    @classmethod
    def from_payload(cls, payload: dict, path: str = DEFAULT_PATH) -> "CapturedRequest":
        return cls(path=path, body=encode_like_paheko(payload))


def encode_like_paheko(payload: object) -> bytes:
    """JSON as PHP's ``json_encode`` writes it by default: compact, ``\\uXXXX`` escapes, escaped slashes."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()


def parse_override(text: str) -> tuple[str, object]:
    """``field=value``: the value is read as JSON when it parses (42, true, "x", [..]), else as text."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{text!r} is not field=value")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def send(request: CapturedRequest, base_url: str, auth: tuple[str, str] | None, *, timeout: float = 10.0) -> httpx.Response:
    """Send like ``{{:api}}``: POST BASE/api/PATH, Basic auth, JSON content type, browser User-Agent, no redirects."""
    headers = {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "User-Agent": request.headers.get("User-Agent", BROWSER_USER_AGENT),
    }
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    elif "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        return client.request(request.method, f"{base_url.rstrip('/')}/api/{request.path}", content=request.body, headers=headers)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "url", required=True, metavar="URL", help="Receiver base URL, e.g. http://127.0.0.1:5000")
@click.option("--source", help="Authenticate with this configured source's webhook credentials.")
@click.option("--path", "api_path", help=f"Path after /api/ (default: the capture's, or {DEFAULT_PATH}).")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="Override a payload field, e.g. --set session_id=7 --set result=-300 (repeatable).")
def replay(file: Path, url: str, source: str | None, api_path: str | None, overrides: tuple[str, ...]) -> None:
    """Send FILE to a receiver exactly as the Paheko module would, and print the answer.

    FILE is a captured request (.http, sent byte for byte unless --set is used) or a JSON payload.
    Without --source, a captured request keeps its own Authorization header.

    \b
    Example:
      paheko-recyclic --config dev.toml replay tests/fixtures/module-request.http \\
          --to http://127.0.0.1:5000 --source lab --set session_id=1
    """
    data = file.read_bytes()
    if file.suffix == ".http":
        request = CapturedRequest.parse_http(data)
    else:
        try:
            request = CapturedRequest.from_payload(json.loads(data))
        except ValueError as exc:
            raise click.ClickException(f"{file} is neither a .http capture nor JSON: {exc}") from None
    if overrides:
        payload = json.loads(request.body)
        payload.update(parse_override(o) for o in overrides)
        request.body = encode_like_paheko(payload)
    if api_path:
        request.path = api_path.lstrip("/").removeprefix("api/")
    auth = None
    if source:
        from receiver.commands.context import config_from_context

        cfg = config_from_context().sources.get(source)
        if cfg is None:
            raise click.ClickException(f"no source {source!r} in the configuration")
        auth = (cfg.webhook[0].user, cfg.webhook[0].password.reveal())
    try:
        response = send(request, url, auth)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"could not reach {url}: {exc}") from None
    click.echo(f"HTTP {response.status_code} {response.reason_phrase}")
    try:
        click.echo(json.dumps(response.json(), ensure_ascii=False, indent=2))
    except ValueError:
        click.echo(response.text)
    if response.is_error:
        raise SystemExit(1)
