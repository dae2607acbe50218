"""Several organisations on one receiver: a configuration of N sources, each on its own Paheko.

Used by the isolation tests and ``bench/isolation.py``. Every source maps like the demo's ``lab``
source and forwards to its own JSON-lines file (the default sink): isolation is about each source's
Paheko, and a file sink (``forwarded-<name>.jsonl`` beside the ledger) keeps the sources from
meeting in one Recyclic register.
"""

from __future__ import annotations


from receiver.demo import demo_config

WEBHOOK_PASSWORD = "MultiSourcePassword42"
PAHEKO_KEY = ("multikey", "MultiSecret42")


def multi_source_config(ledger_url: str, paheko_urls: dict[str, str], *, deadline: float = 60.0,
                        read_timeout: float = 30.0, lease: float = 15.0, poll_interval: float = 60.0) -> str:
    """A configuration with one source per ``{name: paheko url}``, webhook user ``module<name>``."""
    base = demo_config("PAHEKO_URL", PAHEKO_KEY, "http://recyclic.invalid", ("USER", WEBHOOK_PASSWORD), ledger=ledger_url)
    head, _, source = base.partition("[sources.lab]")
    source = "[sources.lab]" + source.split("[sources.lab.sink]")[0] + '[sources.lab.sink]\ntype = "file"\n\n'
    head = head.replace("poll_interval = 1", f"poll_interval = {poll_interval}\nlease = {lease}")
    parts = [head]
    for name, url in paheko_urls.items():
        text = source.replace("[sources.lab", f"[sources.{name}").replace("PAHEKO_URL", url)
        text = text.replace('user = "USER"', f'user = "module{name}"')
        text = text.replace(f'api_password = "{PAHEKO_KEY[1]}"',
                            f'api_password = "{PAHEKO_KEY[1]}"\nread_timeout = {read_timeout}\ndeadline = {deadline}')
        parts.append(text)
    return "\n".join(parts)
