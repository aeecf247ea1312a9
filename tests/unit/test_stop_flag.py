from __future__ import annotations

import os
import signal
import threading
import time

from msightd.stop import StopFlag


def test_set_from_a_signal_handler_wakes_every_waiter() -> None:
    """The node hosts set the flag in SIGTERM handlers while the main thread (and others) wait on it."""
    flag = StopFlag()
    woken: list[bool] = []
    waiter = threading.Thread(target=lambda: woken.append(flag.wait(30)))
    waiter.start()
    previous = signal.signal(signal.SIGUSR1, lambda *_: flag.set())
    try:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        started = time.monotonic()
        assert flag.wait(30) is True
        assert time.monotonic() - started < 20
        flag.set()  # setting twice is harmless
    finally:
        signal.signal(signal.SIGUSR1, previous)
    waiter.join(30)
    assert woken == [True] and flag.is_set()


def test_wait_times_out_when_not_set() -> None:
    flag = StopFlag()
    assert flag.wait(0.05) is False and not flag.is_set()
