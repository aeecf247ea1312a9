"""Real servers on loopback for the test suite and the benchmark (not shipped in the wheel): a GStreamer
RTSP camera, free ports, waiting for a condition with a deadline. Both ``tests/`` and ``bench/`` import
it, so neither imports the other."""
