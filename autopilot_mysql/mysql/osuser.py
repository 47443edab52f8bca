"""Who the supervisor runs as, and what follows from it.

As root (the image's default), mysqld's files are given to the mysql user (chown) and the
supervisor logs in to MariaDB as root@localhost over the unix socket (unix_socket
authentication: no password of its own). As the image's mysql user (Kubernetes'
`runAsUser: 999`, deploy/kubernetes), everything it makes is mysqld's already and chown is not
allowed; unix_socket authentication maps it to mysql@localhost, which mariadb-install-db
creates with every privilege (its `--auth-root-socket-user`, our `--user=mysql`). Any other
user is refused at start: no account would let it in."""

from __future__ import annotations

import functools
import os
import pwd
import shutil
from pathlib import Path

from ..exceptions import ConfigError

MYSQL = "mysql"


def is_root() -> bool:
    return os.geteuid() == 0


@functools.cache
def admin_user() -> str:
    """The MariaDB account of the supervisor and its tools (mariabackup, mariadb-upgrade, the
    mariadb client) over the unix socket."""
    return "root" if is_root() else _name()


def _name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def check() -> None:
    """Refuse to start as a user that cannot manage mysqld."""
    if not is_root() and _name() != MYSQL:
        raise ConfigError([
            f"the supervisor runs as {_name()} (uid {os.geteuid()}), neither root nor the "
            f"image's {MYSQL} user: mysqld's files and MariaDB's unix_socket login need one of "
            "them. Run the container as root (the default) or as the mysql user (Kubernetes: "
            "securityContext runAsUser: 999, runAsGroup: 999, fsGroup: 999)"])


def give(path: Path) -> None:
    """Give `path` to the mysql user (as root); as that user it is ours already."""
    if is_root():
        shutil.chown(path, MYSQL, MYSQL)


def give_tree(path: Path) -> None:
    if not is_root():
        return
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            shutil.chown(os.path.join(root, name), MYSQL, MYSQL)
    shutil.chown(path, MYSQL, MYSQL)
