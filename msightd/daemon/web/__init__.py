"""The daemon's HTTP side: a status page with thumbnails and timelines, per-sensor segment pages with a
player and export, a JSON API, and the ``/metrics`` + ``/healthz`` listener (see :mod:`.server`)."""
