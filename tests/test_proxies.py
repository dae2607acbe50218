"""The shipped reverse proxies, run for real: Debian's nginx and Caddy in front of the receiver as the unit starts it.

Each proxy runs from the file in ``deploy/`` with only what a test must change (loopback ports instead of
80/443, the upstream's port, certificate paths — nginx; for Caddy, ports and storage in the global block
and the documented ``paheko-recyclic-tls.caddy`` snippet), with a certificate from a throwaway local CA.
The receiver is started by the systemd unit's own command. The Paheko module's captured request goes through it over TLS and must be accepted; no ``/api/`` path
may be answered with a redirect on either port; the receiver must see the client's own address (sent
from 127.0.0.2, while the proxy connects from 127.0.0.1) with the ``trusted_proxies`` that ``init`` writes,
even when the client forges ``X-Forwarded-For``. The packages are installed by ``.ci/run``
(``apt-get install nginx-light caddy``); without them these tests skip, saying so. The systemd units are
checked by ``systemd-analyze verify``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from receiver.cli import render_example_config
from receiver.commands.replay import CapturedRequest
from receiver.dev.server import free_port
from receiver.ledger import Ledger
from tests.conftest import config_text
from tests.test_deploy import DEPLOY, ROOT, environment, unit

HOST = "receiver.example.org"
CLIENT_ADDRESS = "127.0.0.2"  # the "Paheko server"; the proxy reaches the receiver from 127.0.0.1
FORGED = "203.0.113.9"
API_PATHS = (
    "/api", "/api/", "/api/paheko", "/api/paheko/caisse", "/api/paheko/caisse/", "/api/paheko/caisse/v1",
    "/api/paheko/caisse/v1/", "/api/paheko/caisse/v1/ping", "/api/paheko/caisse/v1/ping/",
    "/api/paheko/caisse/v1/status?sessions=2", "/api/paheko/caisse/v1/status/?sessions=2",
    "/api/paheko/caisse/session-closed/", "/api/paheko/caisse//v1/ping", "/api/paheko/caisse/v1/unknown",
    "/api/other", "/api/paheko/caisse/v2/session-closed",
)


def which(name: str) -> str | None:
    """A Debian program, also where the PATH lacks the sbin folders (nginx is /usr/sbin/nginx)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def shipped_trusted_proxies_line() -> str:
    """The ``trusted_proxies`` line exactly as ``paheko-recyclic init`` writes it (active, not commented)."""
    [line] = re.findall(r"(?m)^trusted_proxies\s*=.*$", render_example_config())
    return line


@pytest.fixture(scope="module")
def local_ca(tmp_path_factory):
    """A throwaway CA and a certificate for HOST signed by it: (ca.pem, fullchain.pem, key.pem)."""
    if which("openssl") is None:
        pytest.skip("openssl is not installed: no local CA")
    folder = tmp_path_factory.mktemp("ca")

    def openssl(*args: str) -> None:
        subprocess.run([which("openssl"), *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=paheko-recyclic throwaway test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "server.csr", "-subj", f"/CN={HOST}")
    (folder / "ext").write_text(f"subjectAltName=DNS:{HOST}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext")
    (folder / "fullchain.pem").write_text((folder / "server.pem").read_text() + (folder / "ca.pem").read_text())
    return folder / "ca.pem", folder / "fullchain.pem", folder / "key.pem"


def stop_process_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate(timeout=10)


def start_receiver_as_deployed(tmp_path: Path, receiver_settings: str) -> tuple[str, subprocess.Popen]:
    """The receiver started by the systemd unit's own ExecStart and Environment (whatever server it names),
    with the venv, the configuration, the port and the metrics folder pointed at this test's."""
    config = tmp_path / "config.toml"
    config.write_text(config_text(tmp_path, receiver_settings))
    port = free_port()
    bin_dir = Path(sys.executable).parent
    command = [word.replace("/opt/paheko-recyclic/venv/bin/", f"{bin_dir}/")
                   .replace("/opt/paheko-recyclic/deploy/", f"{DEPLOY}/")
                   .replace("/etc/paheko-recyclic/config.toml", str(config))
               for word in shlex.split(unit("paheko-recyclic-receiver.service")["Service"]["ExecStart"])]
    env = {**os.environ, **environment("paheko-recyclic-receiver.service"), "PAHEKO_RECYCLIC_CONFIG": str(config),
           "PAHEKO_RECYCLIC_BIND": f"127.0.0.1:{port}", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    (tmp_path / "metrics").mkdir()
    log = tmp_path / "receiver.log"
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                               start_new_session=True)
    wait_for_port(port, process, log)
    return f"http://127.0.0.1:{port}", process


@dataclass
class Proxy:
    http_port: int
    https_port: int
    receiver_url: str
    ledger_url: str


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    stop_process_group(process)
    pytest.fail(f"the proxy did not start:\n{log.read_text(errors='replace') if log.exists() else ''}")


def substitute(text: str, replacements: list[tuple[str, str]]) -> str:
    """Apply regex replacements, each of which must match (a drifted file fails instead of passing untested)."""
    for pattern, new in replacements:
        text, count = re.subn(pattern, new, text, flags=re.M)
        assert count, f"deploy file changed: {pattern!r} no longer matches"
    return text


def start_nginx(folder: Path, upstream: int, ports: tuple[int, int], cert: Path, key: Path) -> subprocess.Popen:
    p80, p443 = ports
    site = substitute((DEPLOY / "nginx.conf").read_text(), [
        (r"server 127\.0\.0\.1:8000;", f"server 127.0.0.1:{upstream};"),
        (r"^\s*listen \[::\]:(80|443)[^;]*;\n", ""),  # no IPv6 needed on loopback
        (r"listen 80;", f"listen 127.0.0.1:{p80};"),
        (r"listen 443 ", f"listen 127.0.0.1:{p443} "),
        (r"/etc/letsencrypt/live/[^/]+/fullchain\.pem", str(cert)),
        (r"/etc/letsencrypt/live/[^/]+/privkey\.pem", str(key)),
    ])
    (folder / "site.conf").write_text(site)
    temp = "\n".join(f"  {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
  access_log {folder / "access.log"};
{temp}
  include {folder / "site.conf"};
}}
""")
    base = [which("nginx"), "-p", str(folder), "-c", str(folder / "nginx.conf")]
    checked = subprocess.run([*base, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, f"nginx -t refuses deploy/nginx.conf:\n{checked.stderr}"
    process = subprocess.Popen([*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                               stderr=open(folder / "stderr.log", "w"), start_new_session=True)
    wait_for_port(p443, process, folder / "error.log")
    return process


def start_caddy(folder: Path, upstream: int, ports: tuple[int, int], cert: Path, key: Path) -> subprocess.Popen:
    p80, p443 = ports
    caddyfile = substitute((DEPLOY / "Caddyfile").read_text(), [
        (r"127\.0\.0\.1:8000", f"127.0.0.1:{upstream}"),
        (r"^\tauto_https disable_redirects$", f"\tauto_https disable_redirects\n\thttp_port {p80}\n\thttps_port {p443}\n"
                                                f"\tadmin off\n\tdefault_bind 127.0.0.1\n\tstorage file_system {folder / 'data'}"),
    ])
    assert "import paheko-recyclic-tls*.caddy" in caddyfile
    (folder / "Caddyfile").write_text(caddyfile)
    (folder / "paheko-recyclic-tls.caddy").write_text(f"tls {cert} {key}\n")  # the documented snippet
    env = {**os.environ, "HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"), "XDG_CONFIG_HOME": str(folder / "config")}
    base = [which("caddy"), "--config", str(folder / "Caddyfile"), "--adapter", "caddyfile"]
    checked = subprocess.run([base[0], "validate", *base[1:]], capture_output=True, text=True, env=env)
    assert checked.returncode == 0, f"caddy validate refuses deploy/Caddyfile:\n{checked.stderr[-2000:]}"
    log = folder / "caddy.log"
    process = subprocess.Popen([base[0], "run", *base[1:]], stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                               env=env, start_new_session=True)
    wait_for_port(p443, process, log)
    return process


@pytest.fixture(params=["nginx", "caddy"])
def proxy(request, tmp_path, local_ca):
    name = request.param
    if which(name) is None:
        pytest.skip(f"{name} is not installed (.ci/run installs Debian's package; it could not here)")
    _, fullchain, key = local_ca
    url, receiver = start_receiver_as_deployed(tmp_path, shipped_trusted_proxies_line())
    folder = tmp_path / name
    folder.mkdir()
    ports = (free_port(), free_port())
    start = start_nginx if name == "nginx" else start_caddy
    try:
        process = start(folder, int(url.rsplit(":", 1)[1]), ports, fullchain, key)
    except BaseException:
        stop_process_group(receiver)
        raise
    yield Proxy(*ports, url, f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    stop_process_group(process)
    stop_process_group(receiver)


def client(ca: Path) -> httpx.Client:
    """Like Paheko's server: its own address, the certificate verified against HOST, never following redirects."""
    context = ssl.create_default_context(cafile=str(ca))
    transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS, verify=context)
    return httpx.Client(transport=transport, timeout=10, follow_redirects=False, headers={"Host": HOST})


def send_captured(http: httpx.Client, port: int, *, session_id: int, headers: dict | None = None) -> httpx.Response:
    capture = CapturedRequest.parse_http((ROOT / "tests" / "fixtures" / "module-request.http").read_bytes())
    body = json.loads(capture.body)
    body["session_id"] = session_id
    sent = {k: v for k, v in capture.headers.items() if k.lower() not in ("host", "content-length")}
    return http.request(capture.method, f"https://127.0.0.1:{port}/api/{capture.path}",
                        content=json.dumps(body).encode(), headers={**sent, **(headers or {})},
                        extensions={"sni_hostname": HOST})


def test_the_modules_request_goes_through_the_proxy_over_tls(proxy, local_ca):
    with client(local_ca[0]) as http:
        answer = send_captured(http, proxy.https_port, session_id=2)
    assert 200 <= answer.status_code < 300, answer.text
    assert answer.json()["session_id"] == 2


def test_no_api_path_is_ever_redirected_on_either_port(proxy, local_ca):
    with client(local_ca[0]) as http:
        for path in API_PATHS:
            for method in ("GET", "POST"):
                secure = http.request(method, f"https://127.0.0.1:{proxy.https_port}{path}",
                                      extensions={"sni_hostname": HOST})
                plain = http.request(method, f"http://127.0.0.1:{proxy.http_port}{path}")
                for port, answer in (("443", secure), ("80", plain)):
                    assert not (300 <= answer.status_code < 400) and "location" not in answer.headers, \
                        (port, method, path, answer.status_code, answer.headers.get("location"))
                # plain http: refused in place, in French, never moved to https
                if path.startswith("/api/"):
                    assert plain.status_code == 403 and "https://" in plain.json()["error"], (method, path)
                else:
                    assert plain.status_code in (403, 404), (method, path)
        # the receiver answers the module's routes through the proxy (401: no credentials sent)
        ping = http.post(f"https://127.0.0.1:{proxy.https_port}/api/paheko/caisse/v1/ping/",
                         extensions={"sni_hostname": HOST})
        assert ping.status_code == 401 and ping.headers["content-type"].startswith("application/json")


def test_the_receiver_sees_the_clients_own_address_even_when_forged(proxy, local_ca):
    with client(local_ca[0]) as http:
        assert send_captured(http, proxy.https_port, session_id=3).status_code < 300
        assert send_captured(http, proxy.https_port, session_id=4,
                             headers={"X-Forwarded-For": FORGED}).status_code < 300
    ledger = Ledger(proxy.ledger_url)
    try:
        seen = {s: [n["remote_addr"] for n in ledger.notifications_of(ledger.get("lab", s).id)] for s in (3, 4)}
    finally:
        ledger.close()
    assert seen == {3: [CLIENT_ADDRESS], 4: [CLIENT_ADDRESS]}


def test_nginx_is_debian_12s_or_newer():
    if which("nginx") is None:
        pytest.skip("nginx is not installed")
    version = subprocess.run([which("nginx"), "-v"], capture_output=True, text=True).stderr
    found = tuple(int(x) for x in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version).groups())
    assert found >= (1, 22, 1), version  # the proxy tests above ran `nginx -t` on this version


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    """The units as shipped, with only the venv's location pointed at this one (verify wants real executables)."""
    analyze = which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "paheko-recyclic").exists()
    units = []
    for unit in sorted((DEPLOY / "systemd").iterdir()):
        text = unit.read_text()
        assert "/opt/paheko-recyclic/venv/bin/" in text or unit.suffix == ".timer"
        (tmp_path / unit.name).write_text(text.replace("/opt/paheko-recyclic/venv/bin/", f"{bin_dir}/"))
        units.append(str(tmp_path / unit.name))
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, cwd=tmp_path)
    if result.returncode != 0 and "Failed to initialize" in result.stderr + result.stdout:
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
