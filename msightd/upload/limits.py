"""S3's part limits and msightd's upload defaults, without importing boto3 (the daemon validates options)."""

from __future__ import annotations

MIB = 1024 * 1024
#: S3's smallest part (all but the last); AWS refuses smaller ones.
MIN_PART_BYTES = 5 * MIB
#: Above this a file goes as a multipart upload, in parts of this size by default.
DEFAULT_MULTIPART_THRESHOLD = 8 * MIB
MAX_CONCURRENCY = 32
#: Below this a max_bandwidth is almost surely a unit mistake (bits, or kilobytes).
MIN_BANDWIDTH = 1024
