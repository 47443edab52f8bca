"""The `autopilot-mysql` command line.

    autopilot-mysql run            the container's entrypoint: the PID-1 shim and the supervisor
    autopilot-mysql check-config   validate the environment and print the settings (no secrets)
    autopilot-mysql status         this node's status, read from its HTTP endpoint
    autopilot-mysql health         exit 0 when this node is healthy, else 1 (HEALTHCHECK)
    autopilot-mysql list           the whole cluster in one table (-f json|yaml for scripts)
    autopilot-mysql history        every promotion and forced decision, with its reason
    autopilot-mysql pause [--reason TEXT] | resume   maintenance mode: no automatic failover
    autopilot-mysql reinit NODE [--force]   re-provision a replica (snapshot, or a live copy)
    autopilot-mysql switchover [--leader X] [--candidate Y] [--scheduled TIME] [--force]
                                   hand the primary role over, with a short pause
    autopilot-mysql failover --candidate NODE [--force]   no primary, election blocked: force
    autopilot-mysql config show | set NAME=VALUE ...     the cluster-wide settings in Consul
    autopilot-mysql galera bootstrap [--node NAME --force]   Galera: the census; force a bootstrap
    autopilot-mysql backup now | list | restore SNAPSHOT --target DIR | verify SNAPSHOT
    autopilot-mysql version

(`supervise` is the supervisor proper, started by `run`; it is not meant to be run by hand.)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import types
import warnings
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import Settings
from .exceptions import AutopilotError, ConfigError

if TYPE_CHECKING:
    from .httpc import Response

log = logging.getLogger("autopilot_mysql")


def _settings(own_name: bool = True) -> Settings | int:
    """The validated settings, or the exit status after printing every problem. NODE_NAME
    is the node's own, as its supervisor recorded it (startup.stable_node_name; an admin
    command writes nothing); `own_name` False: as the environment says (the supervisor
    settles it itself)."""
    from .config import load_settings

    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"autopilot-mysql: {exc}\n")
        return exc.exit_code
    if not own_name:
        return settings
    from .exceptions import DataDirError
    from .startup import stable_node_name
    try:
        return stable_node_name(settings, given=bool(os.environ.get("NODE_NAME")),
                                record=False)
    except DataDirError:
        return settings


class _OnFirstUse(types.ModuleType):
    """A stand-in for a module that the supervisor imports everywhere and uses rarely: the
    real module is imported at the first read of any of its names, from whichever thread,
    and the stand-in takes its contents (so every holder of the stand-in sees them). Python
    3.11's importlib.util.LazyLoader cannot serve here: the `import` statement itself reads
    `__spec__` of a module already in sys.modules, which loads it."""

    _loading = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        import importlib

        with _OnFirstUse._loading:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
                try:
                    real = importlib.import_module(self.__name__)
                except BaseException:
                    sys.modules[self.__name__] = self
                    raise
                self.__dict__.update(real.__dict__)
        return getattr(sys.modules[self.__name__], name)


def _on_first_use(name: str) -> None:
    if name not in sys.modules:
        from importlib.machinery import ModuleSpec

        stand_in = _OnFirstUse(name)
        stand_in.__spec__ = ModuleSpec(name, None)
        sys.modules[name] = stand_in


def _lean() -> None:
    """The supervisor lives as long as the container: keep out what it never uses.
    - requests (which the live-copy receiver imports while it runs) guesses the character
      set of a response that names none with charset_normalizer, 3-4 MiB of compiled
      modules; nothing the supervisor reads needs a guess (JSON, and our nodes' UTF-8), and
      requests without it falls back to UTF-8, after one warning silenced here.
    - ssl (1.1 MiB: _ssl and libssl) is imported by http.client, PyMySQL and dcs, and used
      only over https (CONSUL with https, S3 with boto3): loaded at its first use."""
    for name in ("charset_normalizer", "chardet"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection")
    _on_first_use("ssl")


def _supervise(mysqld_args: list[str]) -> int:
    _lean()
    from dataclasses import replace

    from .daemon import Daemon
    from .utils import setup_logging
    loaded = _settings(own_name=False)
    if isinstance(loaded, int):
        return loaded
    setup_logging(loaded.log_level, loaded.log_format)
    try:
        from .startup import check_user_settings, stable_node_name
        # Everything checked before anything is written (the node's name, at the first boot)
        settings = replace(loaded, mysqld_args=tuple(mysqld_args))
        check_user_settings(settings)
        for warning in settings.warnings:
            log.warning("%s", warning)
        settings = stable_node_name(settings, given=bool(os.environ.get("NODE_NAME")))
        from .config import CLUSTER_VARIABLES
        given = frozenset(v for v in CLUSTER_VARIABLES if os.environ.get(v))
        if settings.topology == "galera":
            from .galera_node import GaleraSupervisor
            return GaleraSupervisor(settings).run()
        return Daemon(settings, env_given=given).run()
    except AutopilotError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except Exception:
        log.exception("internal error: this is a bug in autopilot-mysql, not a setting of "
                      "yours; please report it with this log. mysqld is stopped cleanly and "
                      "the container exits so that its restart policy takes over")
        return 70


def _check_config() -> int:
    settings = _settings()
    if isinstance(settings, int):
        return settings
    print(json.dumps(settings.redacted(), indent=1, default=str))
    return 0


def _node_call(method: str, url: str, timeout: float,
               headers: dict[str, str] | None = None) -> Response:
    """One call to a node's HTTP endpoint (httpc, as the nodes ask each other). Raises
    OSError when nothing answers, ValueError for a URL that is not http://HOST:PORT."""
    from . import httpc

    return httpc.request(method, url, timeout=timeout, headers=headers)


def _health(url: str) -> int:
    """Docker's HEALTHCHECK: 0 healthy, 1 unhealthy (with the reason on one line)."""
    try:
        r = _node_call("GET", f"{url.rstrip('/')}/health", timeout=4)
    except (OSError, ValueError) as exc:
        print(f"the supervisor's endpoint {url} does not answer ({exc})")
        return 1
    print(r.text.strip())
    return 0 if r.ok else 1


def _status(url: str, fmt: str = "table") -> int:
    try:
        r = _node_call("GET", f"{url.rstrip('/')}/status", timeout=3)
        if not r.ok:
            raise ValueError(f"HTTP {r.status}: {r.text.strip()[:200]}")
        doc = r.json()
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"autopilot-mysql: cannot read {url}/status ({exc}). Is the "
                         "supervisor running, and is HEALTH_PORT right?\n")
        return 1
    if fmt != "table":
        from .clusterview import dump
        print(dump(doc, fmt))
        return 0
    print(f"node {doc['node']}: {doc['role']}, {doc['state']}, "
          f"{'healthy' if doc['healthy'] else 'UNHEALTHY'}, "
          f"{'writable' if doc['writable'] else 'read-only'}")
    print(f"  mysqld {doc['mysqld']}, server_id {doc['server_id']}, {doc['version']}, "
          f"GTID {doc['gtid_current_pos'] or '(none)'}")
    print(f"  leader: {doc['leader'] or '(none)'}; last decision: {doc['last_decision']}")
    if doc.get("paused"):
        print(f"  MAINTENANCE MODE ({doc['paused']}): no automatic failover, mysqld not "
              "restarted; `autopilot-mysql resume` ends it")
    if doc.get("last_error"):
        print(f"  last error: {doc['last_error']}")
    extra = doc.get("extra") or {}
    if extra.get("snapshot"):
        print(f"  snapshots: {extra['snapshot']}")
    if extra.get("snapshot_problem"):
        print(f"  SNAPSHOT PROBLEM: {extra['snapshot_problem']}")
    for m in doc.get("members", []):
        print(f"  member {m['node']:<20} {m['address']:<16} {m['role']:<8} "
              f"{'passing' if m['passing'] else 'FAILING'}")
    return 0


def _cluster_read(what: str, url: str | None) -> Any:
    """The document of `list` ("cluster") or `history`: from a node's HTTP endpoint when
    `url` is given (an operator outside the containers), else from Consul with this
    environment's settings (inside a container). Raises AutopilotError with the cause."""
    from .exceptions import DCSError
    if url:
        target = f"{url.rstrip('/')}/{what}"
        try:
            r = _node_call("GET", target, timeout=10)
        except (OSError, ValueError) as exc:
            raise DCSError(f"cannot read {target} ({exc}). Is the supervisor running there, "
                           "and is HEALTH_PORT right?") from exc
        if not r.ok:
            raise DCSError(f"{target} answered {r.status}: {r.text.strip()}")
        try:
            return r.json()
        except ValueError as exc:
            raise DCSError(f"{target} answered what is not JSON ({exc}). Is that address "
                           "a node's HEALTH_PORT?") from exc
    settings = _settings()
    if isinstance(settings, int):
        raise AutopilotError("the environment above is not a node's (run this inside a "
                             "node's container, or pass --url http://NODE:9200)")
    from . import clusterview
    from .dcs import Consul
    consul = Consul.for_settings(settings)
    try:
        if what == "history":
            return consul.history()
        return clusterview.gather(consul, settings.health_port, settings.topology)
    except DCSError as exc:
        raise DCSError(f"{exc}. Check CONSUL and that Consul is up, or pass --url "
                       "http://NODE:9200 to ask a node") from exc


def _list(url: str | None, fmt: str) -> int:
    from . import clusterview
    try:
        doc = _cluster_read("cluster", url)
    except AutopilotError as exc:
        sys.stderr.write(f"autopilot-mysql: {exc}\n")
        return 1
    print(clusterview.table(doc) if fmt == "table" else clusterview.dump(doc, fmt))
    return 0


def _history(url: str | None, fmt: str) -> int:
    from . import clusterview
    try:
        entries = _cluster_read("history", url)
    except AutopilotError as exc:
        sys.stderr.write(f"autopilot-mysql: {exc}\n")
        return 1
    if fmt != "table":
        print(clusterview.dump(entries, fmt))
    elif not entries:
        print("no promotion or forced decision recorded yet")
    else:
        print(clusterview.history_table(entries))
    return 0


def _switchover(url: str, to: str | None, token: str, wait: float) -> int:
    import time

    base = url.rstrip("/")
    if not token:
        sys.stderr.write("autopilot-mysql: no token: set API_TOKEN (or API_TOKEN_FILE, or "
                         "pass --token-file), the same as on the nodes\n")
        return 2

    from urllib.parse import quote

    def leader() -> str | None:
        r = _node_call("GET", f"{base}/status", timeout=3)
        value = r.json().get("leader") if r.ok else None
        return str(value) if value else None

    try:
        before = leader()
        query = f"?to={quote(to)}" if to else ""
        r = _node_call("POST", f"{base}/switchover{query}", timeout=5,
                       headers={"Authorization": f"Bearer {token}"})
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"autopilot-mysql: cannot reach {base} ({exc})\n")
        return 1
    if not r.ok:
        sys.stderr.write(f"autopilot-mysql: switchover refused ({r.status}): "
                         f"{r.text.strip()}\n")
        return 1
    print(r.text.strip())
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait:
        try:
            now = leader()
        except (OSError, ValueError):
            now = None
        if now and now != before and (not to or now == to):
            print(f"switchover done: {before} -> {now} in {time.monotonic() - t0:.1f}s")
            return 0
        time.sleep(0.1)
    sys.stderr.write(f"autopilot-mysql: no new primary after {wait:.0f}s; see the nodes' "
                     "logs and `autopilot-mysql status`\n")
    return 1


def _token_from_env(path: str | None = None) -> str:
    """The API token: from --token-file, else API_TOKEN, else API_TOKEN_FILE (a secret never
    goes on a command line, where `ps` shows it)."""
    if not path and os.environ.get("API_TOKEN"):
        return os.environ["API_TOKEN"]
    path = path or os.environ.get("API_TOKEN_FILE")
    if path:
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return ""
    return ""


def _mysqld_args(rest: list[str]) -> list[str]:
    """What follows `run` or `supervise`: mariadbd's options, as the official image takes
    them after its name (`command: --max-connections=500`), with or without a `--`."""
    return rest[1:] if rest[:1] == ["--"] else rest


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["run"]:
        from .init import exec_lean
        exec_lean(_mysqld_args(args_in[1:]))  # the shim alone replaces this process
    if args_in[:1] == ["supervise"]:
        return _supervise(_mysqld_args(args_in[1:]))
    import argparse  # here: the supervisor, which lives as long as the container, never parses

    p = argparse.ArgumentParser(prog="autopilot-mysql", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"autopilot-mysql {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    node_url = f"http://127.0.0.1:{os.environ.get('HEALTH_PORT', '9200')}"

    def output(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-f", "--format", choices=("table", "json", "yaml"), default="table",
                        help="output format (default: table)")
    sub.add_parser("run", help="container entrypoint (PID 1); options after it go to mariadbd "
                   "(run -- --max-connections=500)")
    sub.add_parser("supervise", help=argparse.SUPPRESS)
    sub.add_parser("check-config", help="validate the environment")
    he = sub.add_parser("health", help="exit 0 when this node is healthy, 1 when not (a "
                        "Docker HEALTHCHECK)")
    he.add_argument("--url", default=node_url)
    st = sub.add_parser("status", help="this node's status")
    st.add_argument("--url", default=node_url)
    output(st)
    ls = sub.add_parser("list", help="the whole cluster in one table")
    ls.add_argument("--url", default=None, help="ask this node's HTTP endpoint "
                    "(http://NODE:9200) instead of Consul")
    output(ls)
    hs = sub.add_parser("history", help="every promotion and forced decision")
    hs.add_argument("--url", default=None, help="ask this node's HTTP endpoint "
                    "(http://NODE:9200) instead of Consul")
    output(hs)
    so = sub.add_parser("switchover", help="hand the primary role over")
    so.add_argument("--candidate", "--to", dest="to", help="the node to promote (default: "
                    "the best replica)")
    so.add_argument("--leader", help="the current primary, as a check (refused if it is not)")
    so.add_argument("--scheduled", metavar="TIME", help="not before this time (ISO 8601, UTC "
                    "unless an offset is given: 2026-12-03T23:30Z)")
    so.add_argument("--force", action="store_true", help="do not ask for confirmation")
    so.add_argument("--cancel", action="store_true", help="withdraw a pending (scheduled) "
                    "switchover")
    so.add_argument("--url", default=None, help="ask this node's HTTP control endpoint "
                    "(http://NODE:9200, with the API token) instead of Consul")
    so.add_argument("--token-file", default=None, help="with --url: a file holding the API "
                    "token (default: API_TOKEN or API_TOKEN_FILE; never on the command line)")
    so.add_argument("--wait", type=float, default=30.0)
    fo = sub.add_parser("failover", help="no primary and the election is blocked: force a "
                        "candidate (loses what only the missing nodes hold)")
    fo.add_argument("--candidate", required=True, help="the node to make primary")
    fo.add_argument("--force", action="store_true", help="accept the loss it prints")
    fo.add_argument("--reason", default="", help="recorded in Consul with the decision")
    fo.add_argument("--wait", type=float, default=30.0)
    pa = sub.add_parser("pause", help="maintenance mode: no automatic failover, mysqld not "
                        "restarted")
    pa.add_argument("--reason", default="", help="recorded in Consul and shown by `list`")
    pa.add_argument("--wait", type=float, default=15.0, help="seconds to wait for every "
                    "member to confirm")
    re_ = sub.add_parser("resume", help="end maintenance mode")
    re_.add_argument("--wait", type=float, default=15.0)
    ri = sub.add_parser("reinit", help="re-provision a replica from the latest snapshot or "
                        "a live replica")
    ri.add_argument("node", help="the replica to re-provision")
    ri.add_argument("--force", action="store_true", help="do not ask for confirmation")
    ri.add_argument("--reason", default="", help="recorded in the history")
    ri.add_argument("--wait", type=float, default=600.0)
    gl = sub.add_parser("galera", help="TOPOLOGY=galera: the census, a forced bootstrap")
    gl.add_argument("galera_cmd", choices=("bootstrap",))
    gl.add_argument("--node", default=None, help="the node to bootstrap from (with --force)")
    gl.add_argument("--force", action="store_true", help="accept the loss it prints")
    gl.add_argument("--reason", default="", help="recorded in Consul with the decision")
    cf = sub.add_parser("config", help="the cluster-wide settings in Consul: show, set")
    output(cf)
    cf.add_argument("config_cmd", choices=("show", "set"))
    cf.add_argument("assignments", nargs="*", help="NAME=VALUE (for set)")
    bk = sub.add_parser("backup", help="snapshots: now, list, restore, verify")
    bsub = bk.add_subparsers(dest="backup_cmd", required=True)
    bsub.add_parser("now", help="take a snapshot on this node now")
    output(bsub.add_parser("list", help="the snapshots in the bucket"))
    br = bsub.add_parser("restore", help="restore a snapshot into a directory")
    br.add_argument("snapshot", help="an id from `backup list`, or latest")
    br.add_argument("--target", required=True, help="a new or empty directory")
    bv = bsub.add_parser("verify", help="restore into scratch, start a throwaway mysqld")
    bv.add_argument("snapshot", help="an id from `backup list`, or latest")
    rs = sub.add_parser("restore", help="point-in-time recovery: a snapshot, then the archived "
                        "binary log up to a time or a GTID, into a directory")
    point = rs.add_mutually_exclusive_group(required=True)
    point.add_argument("--to-time", help="every transaction written before this time, "
                       "'2026-11-22 10:15:00' (UTC)")
    point.add_argument("--to-gtid", help="every transaction up to and including this one, "
                       "as 0-1-1234")
    rs.add_argument("--target", help="a new or empty directory (required unless --dry-run)")
    rs.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    rs.add_argument("--new-cluster", metavar="NAME", help="also publish the result as the "
                    "first snapshot of a new cluster, SERVICE_NAME=NAME (S3_PREFIX=NAME): its "
                    "nodes start from it; this cluster is not touched")
    sub.add_parser("version")
    args = p.parse_args(argv)
    if args.cmd == "check-config":
        return _check_config()
    if args.cmd == "health":
        return _health(args.url)
    if args.cmd == "status":
        return _status(args.url, args.format)
    if args.cmd == "list":
        return _list(args.url, args.format)
    if args.cmd == "history":
        return _history(args.url, args.format)
    if args.cmd == "switchover":
        if args.url:
            if args.scheduled or args.cancel or args.leader:
                sys.stderr.write("autopilot-mysql: --scheduled, --cancel and --leader go "
                                 "through Consul: run it inside a node's container, without "
                                 "--url\n")
                return 2
            return _switchover(args.url, args.to, _token_from_env(args.token_file), args.wait)
        from .admin import cancel_switchover, switchover
        settings = _settings()
        if isinstance(settings, int):
            sys.stderr.write("autopilot-mysql: (outside a node's container, pass --url "
                             "http://NODE:9200 --token TOKEN)\n")
            return settings
        if args.cancel:
            return cancel_switchover(settings)
        return switchover(settings, args.leader, args.to, scheduled=args.scheduled,
                          force=args.force, wait=args.wait)
    if args.cmd == "failover":
        from .admin import failover
        settings = _settings()
        if isinstance(settings, int):
            return settings
        return failover(settings, args.candidate, force=args.force, reason=args.reason,
                        wait=args.wait)
    if args.cmd in ("pause", "resume"):
        from .admin import pause
        settings = _settings()
        if isinstance(settings, int):
            return settings
        return pause(settings, args.cmd == "pause", reason=getattr(args, "reason", ""),
                     wait=args.wait)
    if args.cmd == "reinit":
        from .admin import reinit
        settings = _settings()
        if isinstance(settings, int):
            return settings
        return reinit(settings, args.node, force=args.force, reason=args.reason,
                      wait=args.wait)
    if args.cmd == "galera":
        from .admin import galera_bootstrap
        settings = _settings()
        if isinstance(settings, int):
            return settings
        return galera_bootstrap(settings, args.node, force=args.force, reason=args.reason)
    if args.cmd == "config":
        from .admin import config
        settings = _settings()
        if isinstance(settings, int):
            return settings
        return config(settings, args.config_cmd, args.assignments, fmt=args.format)
    if args.cmd == "backup":
        from .backup_cli import run as backup_run
        settings = _settings()
        if isinstance(settings, int):
            return settings
        return backup_run(settings, args.backup_cmd, getattr(args, "snapshot", None),
                          getattr(args, "target", None), getattr(args, "format", "table"))
    if args.cmd == "restore":
        from .backup_cli import point_in_time
        settings = _settings()
        if isinstance(settings, int):
            return settings
        return point_in_time(settings, to_time=args.to_time, to_gtid=args.to_gtid,
                             target=args.target, dry_run=args.dry_run,
                             new_cluster=args.new_cluster)
    print(__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
