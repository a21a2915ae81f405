"""A real S3 HTTP server on loopback (moto's server mode), for tests of the object store over the wire.

``S3Server`` starts ``moto.server.ThreadedMotoServer`` on a free port of 127.0.0.1 and creates the bucket with
boto3. ``outage()`` stops the server (every connection is then refused) and ``restore()`` starts it again on the
same port: moto keeps its objects in this process, so the store comes back with what it held.
"""

from __future__ import annotations

import socket
from typing import Any

BUCKET = "comicmem-test"
REGION = "us-east-1"
ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class S3Server:
    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer  # imported here: only the tests of the object store need it

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def outage(self) -> None:
        self.stop()

    def restore(self) -> None:
        self.start()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def create_bucket(self, name: str = BUCKET) -> None:
        self.client().create_bucket(Bucket=name)

    def empty_bucket(self, name: str = BUCKET) -> None:
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])

    def keys(self, prefix: str = "", name: str = BUCKET) -> list[str]:
        client = self.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def environment(self, name: str = BUCKET) -> dict[str, str]:
        """The variables that point a process's storages at this server (settings/object_storage.py)."""
        return {
            "STORAGE_BACKEND": "s3",
            "AWS_STORAGE_BUCKET_NAME": name,
            "AWS_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_S3_REGION_NAME": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_S3_ADDRESSING_STYLE": "path",
            "AWS_S3_CONNECT_TIMEOUT": "2",
            "AWS_S3_READ_TIMEOUT": "10",
            "AWS_S3_MAX_ATTEMPTS": "2",
        }
