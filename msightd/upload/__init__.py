"""Segments off the box: object keys, an S3-compatible store client with verification, bandwidth limiting,
and the upload loop the ``video_s3_uploader`` node runs."""
