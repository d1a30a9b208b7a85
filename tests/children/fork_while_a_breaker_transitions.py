"""Fork while another thread is inside a ``ThreadSafeCircuitBreaker`` transition.

Run by ``tests/breakers/test_threadsafe_breaker.py``. A thread forces the breaker open; its
listener, called with the breaker's lock held, waits until the forking thread has begun its
fork (seen in that thread's stack, or the fork done). The child then uses the breaker: the lock
it inherited must not be held by a thread the child does not have, and the transition must be
whole. A child that hangs is killed by its alarm. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from fluxgate_stream import ThreadSafeCircuitBreaker

WAIT = 10  # seconds: a safety net for a broken run, never what synchronises it
entered, release = threading.Event(), threading.Event()


def holding(_signal: object) -> None:
    entered.set()
    release.wait(WAIT)


cb = ThreadSafeCircuitBreaker(listeners=[holding])
transition = threading.Thread(target=cb.force_open)
transition.start()
entered.wait(WAIT)
result: dict[str, object] = {}


def fork() -> None:
    pid = os.fork()
    if pid == 0:  # the child: only this thread
        signal.alarm(5)  # a deadlocked child is killed (exit -14)
        state = cb.info().state
        cb.reset()
        print(json.dumps({"child": state, "after_reset": cb.info().state}), flush=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    result["child_exit"] = os.waitstatus_to_exitcode(status)


forking = threading.Thread(target=fork)
forking.start()
deadline = time.monotonic() + WAIT
while forking.is_alive() and time.monotonic() < deadline:
    frame = sys._current_frames().get(forking.ident or 0)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    if "_before_fork" in names or "waitpid" in names or not names:
        break  # the fork has begun (waits for the lock) or is done
    time.sleep(0.001)  # sleep-ok: a deadline poll of the other thread's stack
release.set()
transition.join(WAIT)
forking.join(WAIT)
print(json.dumps(result), flush=True)
