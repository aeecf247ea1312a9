"""Pictures and video: capture, encoding, frame rings (imported only by node processes)."""
