"""my.cnf rendering and memory sizing. Pure functions of their inputs (paths injectable)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from string import Template

from ..exceptions import ConfigError
from ..utils import format_size
from . import osuser

MIN_POOL = 32 << 20
DEFAULT_POOL = 128 << 20  # MariaDB's own default, when nothing limits memory


def template_dir() -> Path:
    """etc/ of the source tree (editable installs, tests), else the image's copy."""
    for candidate in (os.environ.get("APM_ETC_DIR"), Path(__file__).resolve().parents[2] / "etc",
                      "/etc/autopilot-mysql"):
        if candidate and (Path(candidate) / "my.cnf.template").exists():
            return Path(candidate)
    raise ConfigError(["APM_ETC_DIR: my.cnf.template not found in the source tree's etc/ or "
                       "/etc/autopilot-mysql. Example: APM_ETC_DIR=/etc/autopilot-mysql"])


def cgroup_memory_limit(proc_self_cgroup: Path = Path("/proc/self/cgroup"),
                        cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The tightest memory limit on this process's cgroup and its ancestors, in bytes;
    None when nothing limits it. Reads cgroup v2 (memory.max) and v1 (memory.limit_in_bytes)."""
    limits: list[int] = []
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hier, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hier == "0" and controllers == "":  # v2
            candidates = [cgroup_root / path.lstrip("/"), cgroup_root]
            fname = "memory.max"
        elif "memory" in controllers.split(","):  # v1
            candidates = [cgroup_root / "memory" / path.lstrip("/"), cgroup_root / "memory"]
            fname = "memory.limit_in_bytes"
        else:
            continue
        seen: set[Path] = set()
        for start in candidates:
            d = start
            while True:
                if d not in seen:
                    seen.add(d)
                    limits += _read_limit(d / fname)
                if d == cgroup_root or d.parent == d or cgroup_root not in d.parents:
                    break
                d = d.parent
    return min(limits) if limits else None


def _read_limit(path: Path) -> list[int]:
    try:
        text = path.read_text().strip()
    except OSError:
        return []
    if text == "max" or not text.isdigit():
        return []
    value = int(text)
    return [] if value >= 1 << 60 else [value]  # v1 says "unlimited" with a huge number


def buffer_pool_size(configured: int | None, memory_limit: int | None) -> tuple[int, str]:
    """Size of the InnoDB buffer pool and a sentence that says where it came from."""
    if configured is not None:
        return configured, f"INNODB_BUFFER_POOL_SIZE={format_size(configured)}"
    if memory_limit is None:
        return DEFAULT_POOL, ("no container memory limit found, so MariaDB's default "
                              f"{format_size(DEFAULT_POOL)} (set INNODB_BUFFER_POOL_SIZE to "
                              "use more)")
    size = max(MIN_POOL, (memory_limit // 2) >> 20 << 20)
    return size, (f"half of the container's memory limit of {memory_limit >> 20}M "
                  "(the rest is for connections, the supervisor and the page cache)")


@dataclass(frozen=True)
class GaleraCnf:
    """What etc/galera.cnf.template needs (TOPOLOGY=galera)."""

    cluster_name: str
    node_address: str


def render_cnf(*, datadir: Path, rundir: Path, server_id: int, report_host: str,
               pool_size: int, pool_reason: str, template: Path | None = None,
               galera: GaleraCnf | None = None) -> str:
    tdir = template.parent if template else template_dir()
    text = (template or tdir / "my.cnf.template").read_text()
    out = Template(text).substitute(
        datadir=datadir, socket=rundir / "mysqld.sock", pidfile=rundir / "mysqld.pid",
        server_id=server_id, report_host=report_host,
        buffer_pool_size=format_size(pool_size) if pool_size % (1 << 20) == 0 else pool_size,
        buffer_pool_reason=pool_reason,
        user_option=f"user{' ' * 27}= {osuser.MYSQL}" if osuser.is_root() else "")
    if galera is not None:
        # Later lines of the same section win: the fragment overrides what replication needs
        # (gtid_strict_mode, gtid_domain_id).
        out += Template((tdir / "galera.cnf.template").read_text()).substitute(
            cluster_name=galera.cluster_name, node_name=report_host,
            node_address=galera.node_address, gtid_domain_id=1000 + server_id)
    return out
