"""Minimal PID 1 for test-bed hosts that run plain components (Consul, MinIO, HAProxy).

It reaps every process that is reparented to it, and on SIGTERM/SIGINT passes SIGTERM to
every process of the host, waits for them (up to 20 s, then SIGKILL), and exits 0.
Hosts that run the product boot `autopilot-mysql run` as PID 1 instead.
"""

import os
import signal
import sys
import time

stopping = False


def on_term(signum: int, frame: object) -> None:
    global stopping
    stopping = True


def others() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and p != "1"]


def signal_others(sig: int) -> None:
    try:
        os.kill(-1, sig)  # from PID 1: every other process of the namespace
    except ProcessLookupError:
        pass  # nobody else is left


def main() -> None:
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    deadline = None
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        if stopping:
            if deadline is None:
                deadline = time.monotonic() + 20
                signal_others(signal.SIGTERM)
            if not others():
                sys.exit(0)
            if time.monotonic() > deadline:
                signal_others(signal.SIGKILL)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
