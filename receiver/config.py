"""The configuration file: one TOML document, validated whole by marshmallow at start-up.

One receiver serves many Paheko organisations ("sources"). Each source has the webhook
credentials its module uses, the Paheko API key used to re-read sessions, its time zone,
and (later sections) its mapping to Recyclic and its sink.

Secrets are given inline (development), as ``{env = "NAME"}`` or as ``{file = "/path"}``
(production). They become :class:`Secret` objects that never print their value.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import ValidationError, fields, post_load, pre_load, validate, validates_schema

from receiver.schemas import Secret, SecretField, StrictSchema, check_http_url
from receiver.sinks.recyclic.mapping.config import Mapping, MappingSchema
from receiver.sinks.registry import SinkConfig, SinkSchema, prepare_source

__all__ = ["Config", "ConfigError", "PahekoApi", "Secret", "SecretField", "Source", "check_http_url",
           "load_config", "parse_config"]

CONFIG_ENV = "PAHEKO_RECYCLIC_CONFIG"
WEBHOOK_CREDENTIAL = re.compile(r"^[A-Za-z0-9]+$")
SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ConfigError(Exception):
    """The configuration file cannot be used; ``problems`` lists every reason, one per line."""

    def __init__(self, path: str | os.PathLike | None, problems: list[str]):
        self.path = path
        self.problems = problems
        where = f" in {path}" if path else ""
        super().__init__(f"{len(problems)} problem(s){where}:\n" + "\n".join(f"  - {p}" for p in problems))


class TimeZoneField(fields.String):
    """An IANA time zone name such as ``Europe/Paris``."""

    def _deserialize(self, value, attr, data, **kwargs) -> ZoneInfo:
        name = super()._deserialize(value, attr, data, **kwargs)
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"unknown time zone {name!r} (expected a name like Europe/Paris)") from None


def _check_webhook_credential(value: str | Secret) -> None:
    text = value.reveal() if isinstance(value, Secret) else value
    if not WEBHOOK_CREDENTIAL.match(text):
        raise ValidationError(
            "use letters and digits only: Paheko puts webhook credentials unencoded in a URL"
        )


@dataclass(frozen=True)
class WebhookCredential:
    user: str
    password: Secret


@dataclass(frozen=True)
class PahekoApi:
    """How the receiver re-reads a source through Paheko's ``/api/sql``."""

    url: str
    api_user: str
    api_password: Secret
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    first_session: int = 1
    #: Total seconds one read may take, retries and their waits included (each attempt's timeouts
    #: are cut to what is left): a hung Paheko costs this much, never retries × read_timeout.
    deadline: float = 60.0


@dataclass(frozen=True)
class Source:
    """One Paheko organisation sending its caisse sessions."""

    name: str
    timezone: ZoneInfo
    webhook: tuple[WebhookCredential, ...]
    paheko: PahekoApi
    mapping: Mapping = field(default_factory=Mapping)
    sink: SinkConfig | None = None  # None: nothing is sent, sessions wait (receiver.sinks.registry.NoSink)


@dataclass(frozen=True)
class ReceiverSettings:
    ledger_url: str
    max_body_bytes: int = 64 * 1024
    auth_failure_limit: int = 10
    auth_failure_window: float = 60.0
    # Reverse proxies whose X-Forwarded-For is believed (addresses/CIDR ranges; receiver.proxies).
    trusted_proxies: tuple[str, ...] = ()
    metrics_token: Secret | None = None  # bearer token for /metrics; without it, loopback only
    raw_body_retention_days: int = 30  # `maintenance prune` clears raw notification bodies older than this


@dataclass(frozen=True)
class WorkerSettings:
    poll_interval: float = 60.0
    #: Seconds a claim on an entry lasts; a working worker renews it every third of that, so the
    #: entry of a worker that died (kill -9, power loss) is taken over this long after its last renewal.
    lease: float = 15.0


@dataclass(frozen=True)
class Config:
    receiver: ReceiverSettings
    worker: WorkerSettings
    sources: dict[str, Source] = field(default_factory=dict)
    path: Path | None = None

    def source_for_webhook_user(self, user: str) -> Source | None:
        """The source whose module logs in as ``user`` (user names are unique across sources)."""
        for source in self.sources.values():
            if any(cred.user == user for cred in source.webhook):
                return source
        return None


class WebhookCredentialSchema(StrictSchema):
    user = fields.String(required=True, validate=_check_webhook_credential)
    password = SecretField(required=True, validate=_check_webhook_credential)

    @post_load
    def make(self, data, **kwargs) -> WebhookCredential:
        return WebhookCredential(**data)


class WebhookSchema(WebhookCredentialSchema):
    """The module's credentials, plus the previous ones still accepted during a rotation."""

    previous = fields.List(fields.Nested(WebhookCredentialSchema), load_default=list)

    @post_load
    def make(self, data, **kwargs) -> tuple[WebhookCredential, ...]:
        return (WebhookCredential(data["user"], data["password"]), *data["previous"])


class PahekoApiSchema(StrictSchema):
    url = fields.String(required=True, validate=check_http_url)
    api_user = fields.String(required=True, validate=validate.Length(min=1))
    api_password = SecretField(required=True)
    connect_timeout = fields.Float(load_default=5.0, validate=validate.Range(min=0.1, max=60))
    read_timeout = fields.Float(load_default=30.0, validate=validate.Range(min=0.1, max=600))
    first_session = fields.Integer(load_default=1, strict=True, validate=validate.Range(min=1))
    deadline = fields.Float(load_default=60.0, validate=validate.Range(min=1, max=3600))

    @post_load
    def make(self, data, **kwargs) -> PahekoApi:
        data["url"] = data["url"].rstrip("/")
        return PahekoApi(**data)


class SourceSchema(StrictSchema):
    timezone = TimeZoneField(load_default=lambda: ZoneInfo("Europe/Paris"))
    webhook = fields.Nested(WebhookSchema, required=True)
    paheko = fields.Nested(PahekoApiSchema, required=True)
    mapping = fields.Nested(MappingSchema, load_default=Mapping)
    sink = fields.Nested(SinkSchema, load_default=None)

    @pre_load
    def sink_first(self, data, **kwargs):
        """Let the sink's package settle what its tables share (Recyclic: ``profile``)."""
        return prepare_source(data)


class ReceiverSettingsSchema(StrictSchema):
    ledger = fields.String(load_default=None)
    max_body_bytes = fields.Integer(load_default=64 * 1024, strict=True, validate=validate.Range(min=1024))
    auth_failure_limit = fields.Integer(load_default=10, strict=True, validate=validate.Range(min=1))
    auth_failure_window = fields.Float(load_default=60.0, validate=validate.Range(min=1))
    trusted_proxies = fields.Raw(load_default=list)
    metrics_token = SecretField(load_default=None)
    raw_body_retention_days = fields.Integer(load_default=30, strict=True, validate=validate.Range(min=1))


    @validates_schema
    def proxies_are_addresses(self, data, **kwargs):
        from receiver.proxies import parse_networks

        value = data.get("trusted_proxies")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationError(
                'must be a list of your reverse proxies\' addresses or CIDR ranges, e.g. ["127.0.0.1", "::1"] '
                "(a number of hops is no longer accepted: it let any client choose its address)",
                "trusted_proxies")
        try:
            parse_networks(value)
        except ValueError as exc:
            raise ValidationError(str(exc), "trusted_proxies") from None

    @post_load
    def proxies_as_tuple(self, data, **kwargs):
        data["trusted_proxies"] = tuple(v.strip() for v in data.get("trusted_proxies", ()))
        return data


class WorkerSettingsSchema(StrictSchema):
    poll_interval = fields.Float(load_default=60.0, validate=validate.Range(min=1))
    lease = fields.Float(load_default=15.0, validate=validate.Range(min=1, max=600))

    @post_load
    def make(self, data, **kwargs) -> WorkerSettings:
        return WorkerSettings(**data)


class ConfigSchema(StrictSchema):
    receiver = fields.Nested(ReceiverSettingsSchema, load_default=lambda: ReceiverSettingsSchema().load({}))
    worker = fields.Nested(WorkerSettingsSchema, load_default=lambda: WorkerSettingsSchema().load({}))
    sources = fields.Dict(
        keys=fields.String(validate=validate.Regexp(SOURCE_NAME, error="source names use a-z, 0-9, - and _")),
        values=fields.Nested(SourceSchema),
        required=True,
        validate=validate.Length(min=1, error="declare at least one [sources.NAME] table"),
    )

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def webhook_users_are_unique(self, data, original, **kwargs):
        # Read from the original document, so a duplicate is reported together with any other problem.
        seen: dict[str, str] = {}
        sources = original.get("sources") if isinstance(original, dict) else None
        for name, source in (sources.items() if isinstance(sources, dict) else ()):
            webhook = source.get("webhook") if isinstance(source, dict) else None
            if not isinstance(webhook, dict):
                continue
            previous = webhook.get("previous") if isinstance(webhook.get("previous"), list) else []
            users = [webhook.get("user")] + [p.get("user") for p in previous if isinstance(p, dict)]
            for user in users:
                if not isinstance(user, str):
                    continue
                if user in seen and seen[user] != name:
                    raise ValidationError(
                        f"webhook user {user!r} is used by sources {seen[user]!r} and {name!r}: "
                        "it identifies the source, so it must be unique",
                        "sources",
                    )
                seen[user] = name


def _flatten(messages: Any, prefix: str = "") -> list[str]:
    """Turn marshmallow's nested error dict into 'a.b.c: message' lines."""
    if isinstance(messages, dict):
        out: list[str] = []
        for key, value in messages.items():
            if key in ("_schema", "value"):  # "value": marshmallow's slot for a Dict entry's content
                label = prefix
            elif key == "key":
                label = f"{prefix} (name)"
            else:
                label = f"{prefix}.{key}" if prefix else str(key)
            out.extend(_flatten(value, label))
        return out
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [f"{prefix}: {m}" if prefix else m for m in messages]
    if isinstance(messages, list):
        return [line for m in messages for line in _flatten(m, prefix)]
    return [f"{prefix}: {messages}"]


def default_ledger_url(base: Path) -> str:
    return f"sqlite:///{(base / 'ledger.sqlite').resolve()}"


def parse_config(document: dict, path: Path | None = None) -> Config:
    """Validate a parsed TOML document; raise :class:`ConfigError` listing every problem."""
    try:
        data = ConfigSchema().load(document)
    except ValidationError as exc:
        raise ConfigError(path, sorted(_flatten(exc.messages))) from None
    base = path.parent if path else Path.cwd()
    receiver = data["receiver"]
    ledger = receiver.pop("ledger") or default_ledger_url(base)
    if ledger.startswith("sqlite:///") and not ledger.startswith("sqlite:////"):
        # Relative SQLite paths are relative to the configuration file, not the working directory.
        ledger = f"sqlite:///{(base / ledger[len('sqlite:///'):]).resolve()}"
    sources = {
        name: Source(name=name, timezone=s["timezone"], webhook=s["webhook"], paheko=s["paheko"],
                     mapping=s["mapping"], sink=s["sink"])
        for name, s in data["sources"].items()
    }
    return Config(
        receiver=ReceiverSettings(ledger_url=ledger, **receiver),
        worker=data["worker"],
        sources=sources,
        path=path,
    )


def read_document(path: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """The configuration file named by ``path`` or ``$PAHEKO_RECYCLIC_CONFIG``, and its TOML, unvalidated."""
    chosen = path or os.environ.get(CONFIG_ENV)
    if not chosen:
        raise ConfigError(None, [f"no configuration file: pass --config FILE or set {CONFIG_ENV}"])
    file = Path(chosen).expanduser()
    try:
        return file, tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(file, [f"cannot read the file: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, [f"not valid TOML: {exc}"]) from None


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read and validate the configuration from ``path`` or ``$PAHEKO_RECYCLIC_CONFIG``."""
    file, document = read_document(path)
    return parse_config(document, file.resolve())
