"""One simulated host: a network namespace on the bed's bridge, plus a PID, mount and UTS
namespace for whatever runs as its PID 1, and a data directory that survives restarts.

A host is "booted" by starting a command as its PID 1:

    ip netns exec NS unshare --pid --fork --mount-proc --uts --kill-child -- \
        sh -c 'hostname N && exec CMD'

`ip netns exec` bind-mounts /etc/netns/NS/hosts over /etc/hosts, so host names resolve. Each
host's processes get TMPDIR=<host dir>/tmp: hosts share one file system, and programs that name
temporary files by pid collide across PID namespaces (mariadb-install-db does). /tmp itself is
not replaced, since the repository and its virtual environment may live under it.
More processes are started inside a running host with `nsenter` into PID 1's namespaces.

Faults are single calls: kill() (SIGKILL to every process of the PID namespace), stop()
(SIGTERM to PID 1, as `docker stop`), pause()/resume() (SIGSTOP/SIGCONT of the whole host),
throttle() (tbf rate limit on its link), restart() (same data directory, like a container restart).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from .util import TestBedError, proc_start_time, run, wait_until

HOSTINIT = Path(__file__).with_name("hostinit.py")


class Host:
    def __init__(self, *, name: str, netns: str, ip: str, veth: str, root: Path) -> None:
        self.name = name
        self.netns = netns
        self.ip = ip
        self.veth = veth  # root-side end of the host's link, on the bridge
        self.dir = root  # the host's "volume": data directories, configs, logs
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.tmp = self.dir / "tmp"  # the host's TMPDIR, as a container has its own /tmp
        self.tmp.mkdir(exist_ok=True)
        os.chmod(self.tmp, 0o1777)
        self.launcher: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None  # real (root namespace) pid of the host's PID 1
        self._pidns: str | None = None
        self._pid1_start: int | None = None  # tells our PID 1 from a later one on its pid
        self._boot_args: tuple[list[str], dict[str, str], str] | None = None
        self._spawned: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self.paused = False

    def __repr__(self) -> str:
        return f"Host({self.name} {self.ip} pid1={self.pid1})"

    # --- boot and processes -------------------------------------------------------------------

    def boot(self, argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
             log: str = "pid1.log") -> None:
        """Start `argv` as the host's PID 1 (a minimal reaping init when None)."""
        if self.running:
            raise TestBedError(f"{self.name} is already running (pid1={self.pid1})")
        cmd = list(argv) if argv else [sys.executable, str(HOSTINIT)]
        full_env = self._env(env)
        self._boot_args = (cmd, dict(full_env), log)
        logf = open(self.dir / log, "ab")  # noqa: SIM115 (closed when the host stops)
        self._logs.append(logf)
        self.launcher = subprocess.Popen(
            ["ip", "netns", "exec", self.netns,
             "unshare", "--pid", "--fork", "--mount-proc", "--uts", "--kill-child", "--",
             "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *cmd],
            env=full_env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            cwd=self.dir, start_new_session=True)
        launcher = self.launcher

        def pid1_or_exit() -> int | None:
            child = _first_child(launcher.pid)
            if child is None and launcher.poll() is not None:
                return -1  # PID 1 exited at once (a refused configuration): see wait()
            return child

        pid1 = wait_until(pid1_or_exit, timeout=10, what=f"PID 1 of host {self.name} to appear")
        self.pid1 = pid1 if pid1 > 0 else None
        self._pidns = None
        if self.pid1 is not None:
            try:
                self._pid1_start = proc_start_time(self.pid1)
                self._pidns = os.readlink(f"/proc/{self.pid1}/ns/pid")
            except FileNotFoundError:
                self.pid1 = None  # already gone
        self.paused = False

    def wait(self, timeout: float) -> int:
        """Wait for PID 1 to exit on its own; its exit status (negative: killed by a signal)."""
        if self.launcher is None:
            raise TestBedError(f"host {self.name} was never booted")
        code = self.launcher.wait(timeout)
        self._reap_launcher(timeout=15)
        return code

    @property
    def running(self) -> bool:
        return self.launcher is not None and self.launcher.poll() is None

    def spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              log: str | None = None) -> subprocess.Popen[bytes]:
        """Start a process inside the running host (its net, mount, UTS and PID namespaces).

        The returned Popen is `nsenter`, which waits for the process and returns its status.
        """
        self._need_pid1()
        out: IO[bytes] | int = subprocess.DEVNULL
        if log:
            out = open(self.dir / log, "ab")  # noqa: SIM115 (closed when the host stops)
            self._logs.append(out)
        proc = subprocess.Popen(
            ["nsenter", "-t", str(self.pid1), "-n", "-m", "-u", "-p", "--", *argv],
            env=self._env(env), stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._spawned.append(proc)
        return proc

    def kill_spawned(self, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
        """SIGKILL a process started by spawn(), as a crash. The Popen is nsenter, which forked
        the command into the host's PID namespace: killing nsenter alone leaves the command
        running (a Consul server "killed" that way went on serving)."""
        for pid in _descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout)

    def exec(self, argv: Sequence[str], *, timeout: float = 60,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host (network namespace only when the host is not booted)."""
        if self.running:
            prefix = ["nsenter", "-t", str(self.pid1), "-n", "-m", "-u", "-p", "--"]
        else:
            prefix = ["ip", "netns", "exec", self.netns]
        return run([*prefix, *argv], timeout=timeout, check=check)

    def processes(self) -> list[int]:
        """Real pids of every process in the host's PID namespace.

        The kernel reuses a namespace's inode number once the namespace is gone, so a later
        host's namespace can carry the number this one recorded: it is ours only if its PID 1
        is the process this host booted (same pid, same start time). While our namespace is
        being torn down after its PID 1 died, what is left in it is still ours."""
        if not self._pidns:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/pid") != self._pidns:
                        continue
                    if _ns_pid(int(entry)) == 1 and (int(entry) != self.pid1 or proc_start_time(
                            int(entry)) != self._pid1_start):
                        return []  # a newer namespace with our old inode number: not ours
                    pids.append(int(entry))
                except OSError:
                    continue
        return pids

    def small_volume(self, size_mb: int, name: str = "data") -> Path:
        """A volume of its own for this host's data directory: an ext4 file system of
        `size_mb` in an image file, loop-mounted at <host dir>/<name> (a disk that can fill
        up while the others have room). The bed unmounts it when it closes, or its sweep
        does after a crash."""
        image, mount = self.dir / f"{name}.img", self.dir / name
        with open(image, "wb") as f:
            f.truncate(size_mb << 20)
        run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], timeout=60)
        mount.mkdir(exist_ok=True)
        run(["mount", "-o", "loop", str(image), str(mount)], timeout=30)
        return mount

    def fill(self, path: Path, leave_mb: int = 0) -> Path:
        """Fill the file system holding `path` up to `leave_mb` of free space with a ballast
        file; delete the returned file to free it again."""
        ballast = path / "ballast.fill"
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize - (leave_mb << 20)
        try:
            f = open(ballast, "ab", buffering=0)  # noqa: SIM115 (unbuffered: a write fails, never the close)
        except OSError:
            return ballast  # full already: nothing to add (nor to free)
        with f:
            chunk = b"\0" * (1 << 20)
            while free > 0:
                n = min(free, len(chunk))
                try:
                    f.write(chunk[:n])
                except OSError:
                    break
                free -= n
        return ballast

    # --- faults -------------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL every process of the host, as a power cut; wait until none is left."""
        self._signal_all(signal.SIGKILL)
        self._reap_launcher(timeout=15)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM to PID 1 (as `docker stop`), SIGKILL of the whole host after `timeout`.

        Returns PID 1's exit status (negative: killed by that signal), None if it never ran.
        """
        if not self.running:
            return self.launcher.returncode if self.launcher else None
        if self.paused:
            self.resume()
        assert self.pid1 is not None
        # The kernel drops a SIGTERM to a PID namespace's init that has no handler for it yet,
        # as at the start of its boot: a host stopped right after its boot, under load, waited
        # for the SIGKILL (8 of 12 runs of test_graceful_stop_pause_resume_and_restart beside
        # three busy loops; unshare then exits 1, "sigprocmask unblock failed"). Docker's stop
        # behaves the same, but a test means its SIGTERM to arrive: wait for the handler.
        deadline = time.monotonic() + timeout
        assert self.launcher is not None
        launcher = self.launcher
        try:
            wait_until(lambda: _catches(self.pid1, signal.SIGTERM) or launcher.poll() is not None,
                       timeout=timeout, interval=0.02,
                       what=f"PID 1 of {self.name} to handle SIGTERM")
        except TimeoutError:
            pass  # it never will: SIGKILL at the deadline, as docker stop does
        try:
            os.kill(self.pid1, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            launcher.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._signal_all(signal.SIGKILL)
        return self._reap_launcher(timeout=15)

    def pause(self) -> None:
        """Freeze every process of the host (SIGSTOP), as a VM or container pause."""
        self._signal_all(signal.SIGSTOP)
        self.paused = True
        # Delivery is asynchronous: return only once every process is really stopped, and every
        # nsenter of spawn() has stopped itself in turn (it does once it sees its child stop).
        # resume()'s SIGCONT to an nsenter that has not stopped yet would be lost: it would stop
        # after it and never reap its child again (util-linux's nsenter, read, not seen here).
        wait_until(lambda: self._states() <= {"T", "Z", "X"}
                   and all(_state(p.pid) in "TZX" for p in self._spawned if p.poll() is None),
                   timeout=5, what=f"every process of {self.name} to stop")

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)
        # nsenter (outside the host) stops itself when its child stops: continue it too, or it
        # never reaps that child again.
        for proc in self._spawned:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.paused = False
        wait_until(lambda: "T" not in self._states(), timeout=5,
                   what=f"every process of {self.name} to continue")

    def _states(self) -> set[str]:
        return {_state(pid) for pid in self.processes()} - {""}

    def restart(self, *, graceful: bool = True) -> None:
        """Stop (or kill) the host and boot it again with the same command on the same data."""
        if self._boot_args is None:
            raise TestBedError(f"{self.name} was never booted")
        if graceful:
            self.stop()
        else:
            self.kill()
        cmd, env, log = self._boot_args
        self.boot(cmd, env=env, log=log)

    def throttle(self, rate: str = "1mbit", burst: str = "32kbit", latency: str = "400ms") -> None:
        """Limit the host's outgoing bandwidth with tbf (this kernel has no netem)."""
        self.exec(["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate,
                   "burst", burst, "latency", latency])

    def unthrottle(self) -> None:
        self.exec(["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)

    # --- internals ------------------------------------------------------------------------------

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """The environment of a process on this host: its own TMPDIR, as a container has its
        own /tmp (programs that name temporary files by pid collide across PID namespaces
        otherwise: mariadb-install-db does)."""
        full = dict(os.environ if env is None else env)
        full.setdefault("PATH", os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
        full["TMPDIR"] = str(self.tmp)
        return full

    def _need_pid1(self) -> None:
        if not self.running or self.pid1 is None:
            raise TestBedError(f"host {self.name} is not running")

    def _signal_all(self, sig: signal.Signals) -> None:
        # New processes may fork while we signal; repeat until a pass finds nothing new.
        seen: set[int] = set()
        for _ in range(50):
            pids = [p for p in self.processes() if p not in seen or sig == signal.SIGKILL]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if sig != signal.SIGKILL:
                seen.update(pids)
                new = [p for p in self.processes() if p not in seen]
                if not new:
                    break
            else:
                time.sleep(0.02)

    def _reap_launcher(self, timeout: float) -> int | None:
        code = None
        if self.launcher is not None:
            try:
                code = self.launcher.wait(timeout)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                code = self.launcher.wait(5)
        wait_until(lambda: not self.processes(), timeout=timeout,
                   what=f"every process of host {self.name} to exit")
        for proc in self._spawned:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._spawned.clear()
        for f in self._logs:
            f.close()
        self._logs.clear()
        self.paused = False
        return code

    def shutdown(self) -> None:
        """Tear-down: kill whatever is left, by id. Never raises."""
        try:
            if self.paused:
                self.resume()
            if self.launcher is not None and self.launcher.poll() is None or self.processes():
                self._signal_all(signal.SIGKILL)
                self._reap_launcher(timeout=15)
        except Exception:
            pass


def _state(pid: int) -> str:
    """The one-letter state of `pid` (R, S, T, Z...), "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return ""


def _catches(pid: int | None, sig: signal.Signals) -> bool:
    """Whether `pid` has a handler installed for `sig` (SigCgt in /proc; gone: False)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except OSError:
        pass
    return False


def _ns_pid(pid: int) -> int | None:
    """The pid of `pid` inside its own (innermost) PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def _first_child(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    if not children:
        return None
    child = int(children[0])
    # `unshare --fork` forks the namespace's PID 1; it must show pid 1 in its own namespace.
    try:
        status = Path(f"/proc/{child}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:") and line.split()[-1] == "1":
            return child
    return None


def _descendants(pid: int) -> list[int]:
    """`pid`'s children, theirs, and so on (deepest last), from /proc."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            kids = []
        out.extend(kids)
        todo.extend(kids)
    return out

