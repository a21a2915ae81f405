"""LiteLLM's proxy, a real OpenAI-compatible server, started on loopback from its own virtualenv (``make litellm``
builds ``.venv-litellm`` from requirements-litellm.txt; ``COMICMEM_LITELLM_VENV`` names another one).

The proxy serves, behind a master key:
- ``story-model``: ``tests/support/litellm_handler.py``, a custom model that answers the pipelines' prompts;
- ``refusing-model``: the same handler refusing with HTTP 401 and a message that echoes a key;
- ``mock-image``: LiteLLM's image mock, which answers with ``mock_response`` as the image's ``url``: a PNG served by
  a small HTTP server on 127.0.0.1, the proxy's own host.
An unknown model name gets the proxy's own HTTP 400 ("Invalid model name passed in model=…").
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-comicmem-proxy-test-4f9a8c7e2b1d"
START_SECONDS = 90.0
# The key the refusing model echoes in its message (litellm_handler.ECHOED_KEY: that module runs in the proxy).
ECHOED_KEY = "upstream-echo-7f3a9c2e5b1d"


def litellm_executable() -> Path | None:
    venv = Path(os.environ.get("COMICMEM_LITELLM_VENV") or REPO_ROOT / ".venv-litellm")
    executable = venv / "bin" / "litellm"
    return executable if executable.exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiteLLMProxy:
    base_url: str  # http://127.0.0.1:<port>/v1
    api_key: str
    image_url: str  # the URL the image mock answers with
    log: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def litellm_proxy_start(executable: Path, folder: Path, image_url: str) -> LiteLLMProxy:
    """Write the proxy's config and handler into ``folder``, start the proxy, wait until it serves."""
    shutil.copy(Path(__file__).with_name("litellm_handler.py"), folder / "litellm_handler.py")
    (folder / "config.yaml").write_text(
        "model_list:\n"
        "  - model_name: story-model\n"
        "    litellm_params: {model: comicmem/story}\n"
        "  - model_name: refusing-model\n"
        "    litellm_params: {model: comicmem/refuse}\n"
        "  - model_name: mock-image\n"
        f'    litellm_params: {{model: openai/dall-e-3, api_key: unused, mock_response: "{image_url}"}}\n'
        "litellm_settings:\n"
        "  drop_params: true\n"
        "  custom_provider_map:\n"
        "    - {provider: comicmem, custom_handler: litellm_handler.handler}\n"
        # A refusing model must keep answering with its own refusal, not be put in cooldown (a 429 of the proxy's).
        "router_settings:\n"
        "  disable_cooldowns: true\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )
    port = _free_port()
    log = folder / "litellm.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        # The model price list ships in the package: no download at start.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "*",
    }
    process = subprocess.Popen(
        [str(executable), "--config", str(folder / "config.yaml"), "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    proxy = LiteLLMProxy(f"http://127.0.0.1:{port}/v1", MASTER_KEY, image_url, log, process)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"LiteLLM's proxy exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2) as response:
                if response.status == 200:
                    return proxy
        except OSError:
            time.sleep(0.5)
    proxy.stop()
    raise RuntimeError(f"LiteLLM's proxy did not serve within {START_SECONDS:g} s:\n{log.read_text()[-3000:]}")
