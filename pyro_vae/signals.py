"""Ctrl-C during training: the first SIGINT asks the trainer to stop after its step.
"""

import signal
import threading
import time
from contextlib import contextmanager

#: In a distributed run, SIGINTs this close together count as one (see
#: :func:`sigint_requests_stop`).
REPEAT_SIGINT_SECONDS = 2.0


@contextmanager
def sigint_requests_stop(trainer):
    """While training in the main thread, the first SIGINT asks the trainer to stop after
    its current step (the run then saves a resumable checkpoint); a second one interrupts
    at once. Under torchrun a worker gets Ctrl-C twice (from the terminal and forwarded by
    torchrun), so there a second SIGINT counts only after :data:`REPEAT_SIGINT_SECONDS`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    first = []

    def handler(signum, frame):
        now = time.monotonic()
        if first and (not trainer.world.distributed or
                      now - first[0] > REPEAT_SIGINT_SECONDS):
            raise KeyboardInterrupt
        if not first:
            first.append(now)
        trainer.stop_requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
