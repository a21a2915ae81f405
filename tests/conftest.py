from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import ProjectFactory, UserFactory
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.s3_server import S3Server
from tests.support.http_servers import Listener

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("COMICMEM_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"


def service_unavailable(reason: str) -> None:
    """Skip on a laptop without the server; in CI (COMICMEM_REQUIRE_SERVICES=1 or CI=true) fail instead."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def tcp_reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL", "")
    if not url:
        service_unavailable("TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/15)")
    if not tcp_reachable(url, 6379):
        service_unavailable(f"Redis at {url} is unreachable")
    return url


@pytest.fixture
def user(db):
    return UserFactory(username="alice")


@pytest.fixture
def other_user(db):
    return UserFactory(username="bob")


@pytest.fixture
def staff_user(db):
    return UserFactory(username="staff", is_staff=True)


def _client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for() -> Callable[..., APIClient]:
    return _client_for


@pytest.fixture
def auth_client(user) -> APIClient:
    return _client_for(user)


@pytest.fixture
def other_client(other_user) -> APIClient:
    return _client_for(other_user)


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    return _client_for(staff_user)


@pytest.fixture
def project(user):
    return ProjectFactory(id="proj-001", owner=user, name="First")


# --- real processes ---------------------------------------------------------------------------------------


def database_url_for_subprocess() -> str:
    """DATABASE_URL that points a child process at the test database this process is using."""
    from django.db import connection

    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    user = quote(settings_dict.get("USER") or "")
    password = quote(settings_dict.get("PASSWORD") or "")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{credentials}{host}:{port}/{settings_dict['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    from django.conf import settings

    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(
        DJANGO_SETTINGS_MODULE="comicmem_site.settings.test",
        COMICMEM_VAR_DIR=str(settings.VAR_DIR),
        DATABASE_URL=database_url_for_subprocess(),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def purge_filesystem_queue() -> None:
    from django.conf import settings

    queue = Path(settings.BROKER_DIR) / "queue"
    if queue.is_dir():
        for message in queue.iterdir():
            message.unlink(missing_ok=True)


class WorkerProcess:
    """A real `celery worker` in a child process, stopped (or killed) by the test."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 1, queues: str | None = None) -> None:
        command = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "comicmem_site",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--without-gossip",
            "--without-mingle",
            f"--hostname=test-{os.getpid()}-{time.monotonic_ns()}@%h",
        ]
        if queues:
            command.append(f"--queues={queues}")
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.output()}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 2) -> None:
        """Cold shutdown; whatever is still alive after ``timeout`` seconds is killed (tests need no grace)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._log.close()

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and its pool children)."""
        if self.process.poll() is None:
            try:
                import psutil

                children = psutil.Process(self.process.pid).children(recursive=True)
            except Exception:  # noqa: BLE001 - the process may be gone already
                children = []
            self.process.send_signal(signal.SIGKILL)
            for child in children:
                with contextlib.suppress(Exception):  # already gone
                    child.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def start_worker(transactional_db, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real Celery workers against the test database; every one is stopped after the test."""
    workers: list[WorkerProcess] = []

    def start(*, broker_url: str | None = None, concurrency: int = 1, ready: bool = True, **env: str) -> WorkerProcess:
        extra = dict(env)
        if broker_url:
            extra["CELERY_BROKER_URL"] = broker_url
        worker = WorkerProcess(subprocess_env(**extra), tmp_path / f"worker-{len(workers)}.log", concurrency)
        workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    purge_filesystem_queue()
    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    """Throttle counters and cached values must not leak from one test into the next."""
    from django.core.cache import cache

    from memory_app.services.cache import cache_process_state_reset

    cache.clear()
    cache_process_state_reset()
    yield
    cache.clear()
    cache_process_state_reset()


# --- cache layer ------------------------------------------------------------------------------------------


@pytest.fixture
def cache_root(settings, tmp_path) -> Path:
    """A fresh CACHE_DIR for one test (file namespaces write their blobs there)."""
    root = tmp_path / "cache"
    root.mkdir()
    settings.CACHE_DIR = root
    return root


@pytest.fixture
def cache_namespaces(settings, cache_root) -> Callable[..., None]:
    """Replace the configured namespaces: ``cache_namespaces(small={"backend": "memory", "max_size": 3})``."""
    from comicmem_site.memory_config import CacheNamespaceConfig

    def configure(**namespaces: dict) -> None:
        settings.MEMORY = settings.MEMORY.model_copy(
            update={"cache": {name: CacheNamespaceConfig(**values) for name, values in namespaces.items()}}
        )

    return configure


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """A local OpenAI-compatible server over real HTTP (tests/fakes/openai_server.py)."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
def litellm_proxy(tmp_path_factory) -> Iterator[Any]:
    """LiteLLM's proxy on loopback, once per session (tests/support/litellm_proxy.py), with the PNG its image mock
    points at served on 127.0.0.1. Skips without the proxy's virtualenv (``make litellm``); fails in CI."""
    from tests.support.http_servers import ImageServer
    from tests.support.litellm_proxy import litellm_executable, litellm_proxy_start

    executable = litellm_executable()
    if executable is None:
        service_unavailable("LiteLLM's proxy is not installed: `make litellm` builds .venv-litellm")
    import io

    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (512, 512), (40, 90, 140))
    ImageDraw.Draw(picture).ellipse((150, 250, 350, 450), fill=(200, 120, 60))
    output = io.BytesIO()
    picture.save(output, format="PNG")
    images = ImageServer({"/panel.png": (200, {"Content-Type": "image/png"}, output.getvalue())})
    proxy = litellm_proxy_start(
        executable, tmp_path_factory.mktemp("litellm"), f"http://127.0.0.1:{images.port}/panel.png"
    )
    try:
        yield proxy
    finally:
        proxy.stop()
        images.close()


@pytest.fixture
def openai_llm(settings, fake_openai) -> FakeOpenAIServer:
    """``settings.MEMORY.providers.llm`` pointed at the fake server, with a short timeout."""
    from comicmem_site.memory_config import ProviderConfig

    providers = settings.MEMORY.providers.model_copy(
        update={
            "llm": ProviderConfig(
                provider="openai",
                base_url=fake_openai.base_url,
                api_key="sk-test",
                model="fake-model",
                timeout_seconds=1.0,
            )
        }
    )
    settings.MEMORY = settings.MEMORY.model_copy(update={"providers": providers})
    return fake_openai


# --- pipelines and creative memory ------------------------------------------------------------------------


@pytest.fixture
def media(settings, tmp_path) -> Path:
    """A fresh MEDIA_ROOT (project storage) and CACHE_DIR (the images file cache) for one test."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    settings.CACHE_DIR = tmp_path / "cache"
    settings.CACHE_DIR.mkdir()
    return root


@pytest.fixture
def manga_shonen(db):
    """The built-in template, as its data migration ships it: a transactional test's flush removes migration
    rows, so tests that need it run the migration's own function again (idempotent)."""
    from importlib import import_module

    from django.apps import apps

    from memory_app.models import StyleTemplate

    import_module("memory_app.migrations.0010_manga_shonen_style").create(apps, None)
    # What 0013 does to the rows it finds: the key becomes the public id.
    StyleTemplate.objects.filter(pk="manga_shonen", public_id="").update(public_id="manga_shonen")
    return StyleTemplate.objects.get(pk="manga_shonen")


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts (a refused target leaves it at zero)."""
    server = Listener()
    yield server
    server.close()


# --- object storage ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 server (moto's server mode) on loopback for the whole session, with the test bucket."""
    server = S3Server().start()
    server.create_bucket()
    yield server
    server.stop()


@pytest.fixture
def s3_storage(s3_server, settings, monkeypatch) -> S3Server:
    """This process's ``default`` and ``cache`` storages on the S3 server (an empty bucket), as production
    configures them: ``settings/object_storage.py`` reading the same variables a worker is given."""
    import environ

    from comicmem_site.settings.object_storage import blob_storages

    if s3_server._server is None:  # a test that took the store away failed before bringing it back
        s3_server.restore()
    s3_server.empty_bucket()
    for variable, value in s3_server.environment().items():
        monkeypatch.setenv(variable, value)
    settings.STORAGES = {
        **settings.STORAGES,
        **blob_storages(environ.Env(), signed_url_max_age=settings.MEMORY.storage.signed_url_max_age),
    }
    settings.STORAGE_BACKEND = "s3"
    return s3_server


@pytest.fixture
def webhook_receiver() -> Iterator[Callable[..., Any]]:
    """Start loopback webhook receivers (``tests.support.webhook_receiver``); each is closed after the test."""
    from tests.support.webhook_receiver import WebhookReceiver

    receivers: list[WebhookReceiver] = []

    def start(answers: list[Any] | None = None) -> WebhookReceiver:
        receiver = WebhookReceiver(answers)
        receivers.append(receiver)
        return receiver

    yield start
    for receiver in receivers:
        receiver.close()


@pytest.fixture
def webhook_settings(settings) -> Callable[..., None]:
    """Change ``memory.webhooks`` keys for this test: ``webhook_settings(allow_loopback=True, max_attempts=2)``."""

    def change(**values: Any) -> None:
        memory = settings.MEMORY
        settings.MEMORY = memory.model_copy(update={"webhooks": memory.webhooks.model_copy(update=values)})

    return change


# --- recall ------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_embeddings() -> Iterator[Any]:
    """A local OpenAI-compatible embeddings server (tests/fakes/embeddings_server.py; a test double)."""
    from tests.fakes.embeddings_server import FakeEmbeddingsServer

    with FakeEmbeddingsServer() as server:
        yield server


@pytest.fixture
def embeddings_configured(settings, fake_embeddings) -> Any:
    """``settings.MEMORY.search.embeddings`` pointed at the fake server (batches of 4, a 1 s timeout)."""
    from comicmem_site.memory_config import EmbeddingsConfig

    search = settings.MEMORY.search.model_copy(
        update={
            "embeddings": EmbeddingsConfig(
                base_url=fake_embeddings.base_url,
                api_key="sk-embed-secret",
                model="fake-embed",
                timeout_seconds=1.0,
                batch_size=4,
            )
        }
    )
    settings.MEMORY = settings.MEMORY.model_copy(update={"search": search})
    return fake_embeddings
