"""An S3-compatible object store (AWS S3, MinIO, Ceph RGW, SeaweedFS, ...) as the uploader needs it.

Every object is written so that it is either absent or whole under its final key, and checked before the
caller may count it as uploaded:

* a body up to ``multipart_threshold`` goes in one ``PutObject`` with ``Content-MD5`` and
  ``x-amz-checksum-sha256`` (the store refuses a body that does not match);
* a larger one goes as a multipart upload, each part with its ``Content-MD5``; S3 shows nothing under the
  key before ``CompleteMultipartUpload``, and a multipart upload of the same key left by a killed
  uploader is aborted before a new one starts (no storage leak, no partial object);
* every object carries its SHA-256 as user metadata (``x-amz-meta-sha256``), so :meth:`ObjectStore.head`
  can tell, on every store, whether the object under a key is exactly this segment's;
* :meth:`ObjectStore.put` ends with a ``HEAD`` that checks size, that SHA-256 and the ETag (MD5, or MD5
  of the parts' MD5s with ``-N`` for multipart; skipped only where the store says it encrypts with KMS or
  a customer key, where the ETag is not an MD5).

Failures become :class:`StoreError` with a ``kind`` (a bounded set, also a metric label) and a sentence
that names what to fix. Credentials are resolved the boto3 way (environment, shared files, profiles,
instance roles) unless given explicitly; they are never part of a message or a ``repr``.

Thread-safety: one :class:`ObjectStore` serves all upload threads (boto3 clients are thread-safe).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectTimeoutError as BotoConnectTimeout,
)
from botocore.exceptions import (
    ReadTimeoutError as BotoReadTimeout,
)

from msightd.logs import redact_url
from msightd.upload.limits import DEFAULT_MULTIPART_THRESHOLD, MIB
from msightd.upload.throttle import Cancel, ThrottledReader, TokenBucket, UploadCancelled

STORE_ERROR_KINDS = ("unreachable", "credentials", "bucket_missing", "rejected", "server", "mismatch")
_CREDENTIAL_CODES = frozenset(
    ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
     "AccessDenied", "AllAccessDisabled", "InvalidClientTokenId", "403", "Forbidden")
)  # fmt: skip
_NETWORK_ERRORS = (EndpointConnectionError, ConnectionClosedError, BotoConnectTimeout, BotoReadTimeout)


class StoreError(Exception):
    """An operation on the store failed; ``kind`` is one of :data:`STORE_ERROR_KINDS`, ``str()`` says what to fix."""

    def __init__(self, kind: str, message: str) -> None:
        assert kind in STORE_ERROR_KINDS, kind
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class StoreSettings:
    """Where and how to upload. Credentials ``None`` = boto3's own lookup; they never appear in a repr."""

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    use_dualstack_endpoint: bool = False
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    part_size: int = DEFAULT_MULTIPART_THRESHOLD
    max_bandwidth: int | None = None
    concurrency: int = 2
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0

    def describe(self) -> str:
        """The endpoint for messages (no credentials, even inside a URL)."""
        return redact_url(self.endpoint_url) if self.endpoint_url else f"AWS S3 ({self.region})"


@dataclass(frozen=True)
class ObjectDigest:
    """What an object must look like once stored."""

    size: int
    sha256_hex: str
    etag: str  # as S3 computes it (hex MD5, or MD5 of part MD5s + "-N")

    @property
    def multipart(self) -> bool:
        return "-" in self.etag


@dataclass(frozen=True)
class StoredObject:
    size: int
    etag: str
    sha256_hex: str | None
    etag_is_md5: bool

    def matches(self, digest: ObjectDigest) -> bool:
        return (
            self.size == digest.size
            and self.sha256_hex == digest.sha256_hex
            and (not self.etag_is_md5 or self.etag == digest.etag)
        )


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _chunks(source: Path | bytes, size: int) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for start in range(0, max(len(source), 1), size):
            yield source[start : start + size]
        return
    with source.open("rb") as file:
        first = True
        while True:
            chunk = file.read(size)
            if not chunk and not first:
                return
            first = False
            yield chunk
            if len(chunk) < size:
                return


def digest_of(source: Path | bytes, multipart_threshold: int, part_size: int) -> ObjectDigest:
    """Size, SHA-256 and the ETag S3 will compute for ``source`` uploaded with these settings."""
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    sha = hashlib.sha256()
    if size <= multipart_threshold:
        md5 = hashlib.md5()
        for chunk in _chunks(source, MIB):
            sha.update(chunk)
            md5.update(chunk)
        return ObjectDigest(size, sha.hexdigest(), md5.hexdigest())
    part_md5s = []
    for part in _chunks(source, part_size):
        sha.update(part)
        part_md5s.append(hashlib.md5(part).digest())
    etag = f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"
    return ObjectDigest(size, sha.hexdigest(), etag)


class ObjectStore:
    """One bucket. ``cancel`` (the node's stop flag) abandons uploads in progress between blocks."""

    def __init__(self, settings: StoreSettings, cancel: Cancel | None = None) -> None:
        self.settings = settings
        self._cancel = cancel
        self._bucket = TokenBucket(settings.max_bandwidth) if settings.max_bandwidth else None
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            region_name=settings.region,
        )
        s3_options: dict[str, Any] = {"use_dualstack_endpoint": settings.use_dualstack_endpoint}
        if settings.endpoint_url:
            s3_options["addressing_style"] = "path"  # MinIO, SeaweedFS, RGW: no per-bucket DNS names needed
        config = Config(
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            retries={"mode": "standard", "max_attempts": 1},  # the node retries, with its own backoff
            max_pool_connections=settings.concurrency + 2,
            request_checksum_calculation="when_required",  # we send our own MD5 and SHA-256
            response_checksum_validation="when_required",
            s3=s3_options,
        )
        self._client = session.client("s3", endpoint_url=settings.endpoint_url, config=config)
        self._client.meta.events.register("before-send.s3.PutObject", self._throttle_body)
        self._client.meta.events.register("before-send.s3.UploadPart", self._throttle_body)

    def _throttle_body(self, request: Any, **_: Any) -> None:
        """After signing, just before sending: the body pays the bandwidth limit and obeys ``cancel``."""
        body = request.body
        if isinstance(body, bytes | bytearray):
            body = io.BytesIO(body)
        if body is not None and hasattr(body, "read"):
            request.body = ThrottledReader(body, self._bucket, self._cancel)

    def _cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def digest(self, source: Path | bytes) -> ObjectDigest:
        return digest_of(source, self.settings.multipart_threshold, self.settings.part_size)

    def head(self, key: str) -> StoredObject | None:
        """The object under ``key``, or None when there is none."""
        try:
            response = self._client.head_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise self._error(exc, "HeadObject", key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "HeadObject", key) from None
        encrypted = (
            str(response.get("ServerSideEncryption", "")).startswith("aws:kms") or "SSECustomerAlgorithm" in response
        )
        return StoredObject(
            size=int(response["ContentLength"]),
            etag=str(response.get("ETag", "")).strip('"'),
            sha256_hex=(response.get("Metadata") or {}).get("sha256"),
            etag_is_md5=not encrypted,
        )

    def put(self, key: str, source: Path | bytes, content_type: str, digest: ObjectDigest | None = None) -> int:
        """Store ``source`` under ``key`` and verify it; returns the bytes sent. Raises :class:`StoreError`
        or :class:`UploadCancelled`."""
        digest = digest or self.digest(source)
        try:
            if digest.multipart:
                self._put_multipart(key, source, content_type, digest)
            else:
                self._put_single(key, source, content_type, digest)
        except (ClientError, BotoCoreError) as exc:  # an OSError reading the local file is the caller's
            if self._cancelled():
                raise UploadCancelled("upload cancelled") from None
            raise self._error(exc, "upload", key) from None
        self.verify(key, digest)
        return digest.size

    def verify(self, key: str, digest: ObjectDigest) -> None:
        stored = self.head(key)
        if stored is None or not stored.matches(digest):
            raise StoreError(
                "mismatch",
                f"s3://{self.settings.bucket}/{key} does not hold what was sent (stored {stored}, expected "
                f"size {digest.size}, sha256 {digest.sha256_hex[:12]}..., etag {digest.etag}); uploading again",
            )

    def _put_single(self, key: str, source: Path | bytes, content_type: str, digest: ObjectDigest) -> None:
        body = source if isinstance(source, bytes) else source.read_bytes()
        if len(body) != digest.size:  # segment files are never rewritten; a different size is a broken disk
            raise OSError(f"{getattr(source, 'name', 'body')} changed size while being uploaded")
        self._client.put_object(
            Bucket=self.settings.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            ContentMD5=_b64(hashlib.md5(body).digest()),
            ChecksumSHA256=_b64(bytes.fromhex(digest.sha256_hex)),
            Metadata={"sha256": digest.sha256_hex},
        )

    def _put_multipart(self, key: str, source: Path | bytes, content_type: str, digest: ObjectDigest) -> None:
        self.abort_stale_uploads(key)
        bucket = self.settings.bucket
        upload_id = self._client.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType=content_type, Metadata={"sha256": digest.sha256_hex}
        )["UploadId"]
        try:
            parts = []
            for number, part in enumerate(_chunks(source, self.settings.part_size), start=1):
                if self._cancelled():
                    raise UploadCancelled("upload cancelled")
                response = self._client.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=part,
                    ContentMD5=_b64(hashlib.md5(part).digest()),
                )
                parts.append({"PartNumber": number, "ETag": response["ETag"]})
            self._client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            if not self._cancelled():  # stopping: leave it, the next attempt at this key aborts it
                self._abort_quietly(key, upload_id)
            raise

    def abort_stale_uploads(self, key: str) -> int:
        """Abort multipart uploads of exactly ``key`` (left by an uploader that died mid-way: only one
        upload of a key runs at a time, so any found now is stale). Returns how many were aborted."""
        response = self._client.list_multipart_uploads(Bucket=self.settings.bucket, Prefix=key)
        stale = [upload for upload in response.get("Uploads", []) if upload.get("Key") == key]
        for upload in stale:
            self._abort_quietly(key, upload["UploadId"])
        return len(stale)

    def _abort_quietly(self, key: str, upload_id: str) -> None:
        """Best effort: if the store is unreachable now, the next attempt at this key aborts it."""
        with contextlib.suppress(ClientError, BotoCoreError):
            self._client.abort_multipart_upload(Bucket=self.settings.bucket, Key=key, UploadId=upload_id)

    def _error(self, exc: BaseException, operation: str, key: str) -> StoreError:
        where = self.settings.describe()
        bucket = self.settings.bucket
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StoreError(
                "credentials",
                f"no usable credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a "
                "profile, a shared credentials file, an instance role, or aws_access_key_id / "
                "aws_secret_access_key in the node's config)",
            )
        if isinstance(exc, _NETWORK_ERRORS):
            return StoreError(
                "unreachable",
                f"cannot reach the object store at {where} ({type(exc).__name__}): check the network / VPN and "
                "endpoint_url; segments stay on disk and uploads are retried",
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", "")) or str(_status(exc))
            status = _status(exc)
            if code == "NoSuchBucket":
                return StoreError(
                    "bucket_missing", f"bucket {bucket!r} does not exist at {where}: create it or fix bucket_name"
                )
            if code in _CREDENTIAL_CODES or status == 403:
                return StoreError(
                    "credentials",
                    f"the object store at {where} refused the credentials or permissions for bucket {bucket!r} "
                    f"({code} on {operation}): fix aws_access_key_id / aws_secret_access_key (or the "
                    "AWS_* environment, profile or role) or grant s3:PutObject, s3:GetObject and "
                    "s3:ListBucketMultipartUploads on the bucket",
                )
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "BadDigest", "IncompleteBody"):
                return StoreError("server", f"the object store at {where} failed {operation} ({code}); retrying")
            message = exc.response.get("Error", {}).get("Message", "")
            return StoreError(
                "rejected", f"the object store at {where} rejected {operation} of {key!r} ({code}: {message})"
            )
        return StoreError("server", f"{operation} of {key!r} at {where} failed: {type(exc).__name__}: {exc}")


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
