"""The PID-1 shim behind `autopilot-mysql run`. Standard library only, and kept tiny: the
supervisor proper runs in a child process, so a bug or a crash there can never leave the
container without an init or leave mysqld running unsupervised. It lives as long as the
container, so it holds as little as it can: `run` replaces the command line's process with
this file under `python -I -S` (no site-packages, no package import), and it starts the
supervisor with fork and exec rather than subprocess (about 8.5 MiB resident, against 23 MiB
as part of the command line).

- Reaps every child, orphans included (as PID 1, or as a child subreaper when not PID 1).
- Forwards SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 to the supervisor.
- When the supervisor exits, stops everything still running: SIGTERM (mysqld then shuts
  InnoDB down cleanly), SIGKILL after STOP_TIMEOUT; the Consul agent last, once mysqld is
  gone (the agent's exit ends the node's session, and so starts an election). The exit
  status is the supervisor's: 0 after a graceful stop, 2 for a configuration error,
  non-zero when it crashed or was killed, so the container's restart policy takes over.
"""

from __future__ import annotations

# The C module behind `signal`, without the enum wrappers `signal` builds on import (a MiB of
# a process that lives as long as the container); the same functions and numbers.
import _signal as signal  # type: ignore[import-not-found]
import os
import sys
import time

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
NAMES = {getattr(signal, n): n for n in dir(signal)
         if n.startswith("SIG") and not n.startswith(("SIG_", "SIGRT"))}
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _say(msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    sys.stderr.write(f"{stamp}Z INFO    autopilot_mysql.init: {msg}\n")
    sys.stderr.flush()


def _prctl(option: int, value: int) -> None:
    import ctypes  # only where it is needed: outside a container, and in the forked child

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(option, value, 0, 0, 0)


def exec_lean(mysqld_args: list[str] | None = None) -> None:
    """Replace this process (the command line, with its imports) by the shim alone: the
    same interpreter, isolated and without site-packages, running this file. The PID stays.
    `mysqld_args` (options after the image name) are handed on to the supervisor.
    (Never returns; not annotated NoReturn: `typing` alone would add a MiB to the shim.)"""
    os.execv(sys.executable, [sys.executable, "-I", "-S", os.path.abspath(__file__),
                              *(mysqld_args or [])])


def _start_supervisor(mysqld_args: list[str]) -> int:
    """Fork the supervisor: `python -m autopilot_mysql supervise [mysqld options]`, stopped
    gracefully (SIGTERM) if this shim dies."""
    argv = [sys.executable, "-m", "autopilot_mysql", "supervise", *mysqld_args]
    pid = os.fork()
    if pid:
        return pid
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # if this shim is killed, stop gracefully
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        os.execv(argv[0], argv)
    except BaseException as exc:  # noqa: BLE001 - the child must never return into the shim
        _say(f"cannot start the supervisor ({' '.join(argv)}): {exc}")
    os._exit(127)


def _stop_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get("STOP_TIMEOUT", "30")))
    except ValueError:
        return 30.0  # the supervisor reports the bad value; here a default is safe


def _children(me: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.append(int(entry))
    return out


def _reap() -> list[tuple[int, int]]:
    done: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done.append((pid, status))


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _stop_all(timeout: float) -> None:
    """SIGTERM to every remaining child, then SIGKILL; the Consul agent last: it keeps this
    node's session, and so a primary's lock, until mysqld is gone, so that no election starts
    while mysqld still shuts down (its clients are served until then, and nobody fences it:
    its supervisor is gone). Each exit is reported: mysqld's own output went to the
    supervisor, so its status here is what tells the operator whether it shut down cleanly
    (status 0)."""
    me = os.getpid()
    names = {pid: _comm(pid) for pid in _children(me)}
    if not names:
        return
    deadline = time.monotonic() + timeout
    agents = {pid for pid, name in names.items() if name == "consul"}
    first = [pid for pid in names if pid not in agents]
    if first:
        _stop(first, names, deadline - (2.0 if agents else 0.0), me)
    if agents:
        _stop(sorted(agents), names, max(deadline, time.monotonic() + 1.0), me)


def _stop(pids: list[int], names: dict[int, str], deadline: float, me: int) -> None:
    _say("stopping " + ", ".join(f"{names[p]} ({p})" for p in pids) + " with SIGTERM, up to "
         f"{max(0.0, deadline - time.monotonic()):.0f}s before SIGKILL")
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def report(done: list[tuple[int, int]]) -> None:
        for pid, status in done:
            if pid in names:
                code = os.waitstatus_to_exitcode(status)
                how = (f"exited with status {code}" if code >= 0
                       else f"was killed by {NAMES.get(-code, f'signal {-code}')}")
                _say(f"{names[pid]} ({pid}) {how}"
                     + (" (a clean shutdown)" if code == 0 else ""))

    def running() -> list[int]:
        alive = set(_children(me))
        return [p for p in pids if p in alive]

    while time.monotonic() < deadline:
        report(_reap())
        if not running():
            return
        time.sleep(0.05)
    left = running()
    _say(f"still running at the deadline: {left}; sending SIGKILL")
    for pid in left:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.1)
    report(_reap())


def main(argv: list[str] | None = None) -> int:
    if os.getpid() != 1:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans come to us, as they would to PID 1

    sup_pid = _start_supervisor(sys.argv[1:] if argv is None else argv)

    def forward(signum: int, frame: object) -> None:
        try:
            os.kill(sup_pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)

    status = None
    while status is None:
        try:
            pid, st = os.waitpid(-1, 0)  # reaps orphans too
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == sup_pid:
            status = st
    code = 1
    if status is not None:
        code = os.waitstatus_to_exitcode(status)
    if code < 0:
        _say(f"the supervisor was killed by {NAMES.get(-code, f'signal {-code}')}: stopping mysqld "
             "cleanly and exiting, so the restart policy takes over")
        code = 128 - code
    elif code not in (0, 2):
        _say(f"the supervisor exited with status {code}: stopping what is left")
    _stop_all(_stop_timeout())
    return code


if __name__ == "__main__":  # `run` execs this file alone (exec_lean)
    sys.exit(main())
