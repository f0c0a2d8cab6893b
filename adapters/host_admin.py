"""The host as ``dma install-system`` sees and changes it: paths (never followed),
users and groups (useradd and friends), Debian's package database (dpkg-query,
dpkg-divert), systemd (systemctl) and the queue runner's lock.

Every change is one small function that either does it or raises a DmaError saying
what failed; reading the host gives ``core/install_plan`` values.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterable, Sequence

from dma.core.errors import CantCreateError, SoftwareError
from dma.core.install_plan import Kind, PathState, UnitState

DIGEST_LIMIT = 16 * 1024 * 1024
"""Files larger than this are not read for their digest (they are no file of ours)."""

NOLOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
NO_HOME = "/nonexistent"
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class HostCommandError(CantCreateError):
    """An administration command (useradd, dpkg-divert, systemctl) failed."""


# ---- reading ---------------------------------------------------------------------


def _name(lookup: str, number: int) -> str:
    try:
        if lookup == "user":
            return pwd.getpwuid(number).pw_name
        return grp.getgrgid(number).gr_name
    except KeyError:
        return str(number)


def path_state(path: str, *, with_digest: bool = True) -> PathState:
    """``path`` as ``lstat`` sees it; a directory's entries, a small file's SHA-256."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return PathState(Kind.MISSING)
    except NotADirectoryError:
        return PathState(Kind.MISSING)
    owner, group = _name("user", info.st_uid), _name("group", info.st_gid)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return PathState(Kind.LINK, owner, group, mode, target=os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        entries = tuple(sorted(os.listdir(path)))
        return PathState(Kind.DIRECTORY, owner, group, mode, entries=entries)
    if stat.S_ISREG(info.st_mode):
        digest = _digest(path) if with_digest and info.st_size <= DIGEST_LIMIT else ""
        return PathState(Kind.FILE, owner, group, mode, digest=digest)
    return PathState(Kind.OTHER, owner, group, mode)


def _digest(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        sha = hashlib.sha256()
        while chunk := os.read(fd, 1 << 16):
            sha.update(chunk)
        return sha.hexdigest()
    finally:
        os.close(fd)


def path_states(paths: Iterable[str], *, children_of: Sequence[str] = ()) -> dict[str, PathState]:
    """The state of each path, and of each entry of the directories ``children_of``
    (without digests: those are queue files)."""
    found = {path: path_state(path) for path in paths}
    for directory in children_of:
        for name in found.get(directory, path_state(directory)).entries:
            child = os.path.join(directory, name)
            found.setdefault(child, path_state(child, with_digest=False))
    return found


def existing_users(names: Iterable[str]) -> frozenset[str]:
    """The names among ``names`` that are users."""
    found = set()
    for name in names:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            found.add(name)
    return frozenset(found)


def existing_groups(names: Iterable[str]) -> frozenset[str]:
    """The names among ``names`` that are groups."""
    found = set()
    for name in names:
        with contextlib.suppress(KeyError):
            grp.getgrnam(name)
            found.add(name)
    return frozenset(found)


def package_owners(paths: Sequence[str]) -> dict[str, str] | None:
    """The Debian package owning each path (``dpkg-query -S``); paths no package owns
    are left out.  None when there is no dpkg."""
    query = shutil.which("dpkg-query")
    if query is None:
        return None
    if not paths:
        return {}
    done = subprocess.run([query, "-S", *paths], capture_output=True, text=True, check=False,
                          env={"PATH": CLEAN_PATH, "LC_ALL": "C"})
    owners: dict[str, str] = {}
    for line in done.stdout.splitlines():
        packages, sep, path = line.partition(": ")
        if sep and path in paths and not packages.startswith(("diversion by", "local diversion")):
            owners[path] = packages
    return owners


def systemd_running() -> bool:
    """True when systemd is the init system (sd_booted: /run/systemd/system exists)."""
    return os.path.isdir("/run/systemd/system")


def unit_states(units: Iterable[str]) -> dict[str, UnitState]:
    """Whether each unit is enabled and active (systemctl is-enabled, is-active)."""
    states = {}
    for unit in units:
        enabled = _systemctl_says("is-enabled", unit) == "enabled"
        active = _systemctl_says("is-active", unit) == "active"
        states[unit] = UnitState(enabled, active)
    return states


def _systemctl_says(question: str, unit: str) -> str:
    done = subprocess.run(["systemctl", question, unit], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip()


def lock_holders(path: str) -> list[int]:
    """The processes holding a lock on the file ``path`` (from /proc/locks): the
    runner's lock is looked at without being taken."""
    try:
        info = os.stat(path, follow_symlinks=False)
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return []
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    holders = []
    for line in lines:
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if len(fields) >= 6 and fields[5] == device and fields[4].isdigit():
            holders.append(int(fields[4]))
    return sorted(set(holders))


def unreachable(paths: Iterable[str]) -> tuple[str, ...]:
    """Why users other than root cannot run or read these paths: a directory on the
    way without search permission for others, or a file others cannot read."""
    reasons: list[str] = []
    for path in paths:
        for candidate in dict.fromkeys((path, os.path.realpath(path))):
            parts = candidate.split("/")
            for end in range(2, len(parts)):
                directory = "/".join(parts[:end])
                try:
                    mode = stat.S_IMODE(os.stat(directory).st_mode)
                except OSError:
                    continue
                if not mode & 0o001:
                    reasons.append(f"{directory} is mode {mode:04o}")
                    break
            else:
                with contextlib.suppress(OSError):
                    mode = stat.S_IMODE(os.stat(candidate).st_mode)
                    if not mode & 0o004:
                        reasons.append(f"{candidate} is mode {mode:04o}")
    return tuple(dict.fromkeys(reasons))


def interpreter(script: str) -> str | None:
    """The interpreter named on a script's ``#!`` line, if it has one."""
    try:
        with open(script, "rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    return words[0] if words else None


# ---- changing --------------------------------------------------------------------


def run(argv: Sequence[str], what: str) -> None:
    """Run an administration command; HostCommandError with its output when it fails."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False,
                              env={**os.environ, "LC_ALL": "C"})
    except OSError as error:
        raise HostCommandError(f"{what}: cannot run {argv[0]}: {error.strerror}") from None
    if done.returncode != 0:
        output = " ".join((done.stderr or done.stdout).split())
        raise HostCommandError(f"{what}: {' '.join(argv)} exited {done.returncode}: {output}")


def add_group(name: str) -> None:
    """A system group."""
    run(["groupadd", "--system", name], f"adding the group {name}")


def add_user(name: str, group: str) -> None:
    """A system user in ``group``: no login shell, no home directory."""
    shell = next((path for path in NOLOGIN_SHELLS if os.path.exists(path)), "/bin/false")
    run(["useradd", "--system", "--gid", group, "--no-create-home", "--home-dir", NO_HOME,
         "--shell", shell, "--comment", "dma mail delivery", name], f"adding the user {name}")


def delete_user(name: str) -> None:
    """userdel (when the user is still there)."""
    if existing_users([name]):
        run(["userdel", name], f"removing the user {name}")


def delete_group(name: str) -> None:
    """groupdel (when the group is still there: userdel may have removed it)."""
    if existing_groups([name]):
        run(["groupdel", name], f"removing the group {name}")


def _ids(owner: str, group: str) -> tuple[int, int]:
    try:
        uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError as error:
        raise SoftwareError(f"no such user or group: {error.args[0]}") from None
    return uid, gid


def set_owner_mode(path: str, owner: str, group: str, mode: int) -> None:
    """chown and chmod through a descriptor opened without following a link (a FIFO
    does not block: O_NONBLOCK)."""
    uid, gid = _ids(owner, group)
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)  # after chown, which may clear set-id bits
    finally:
        os.close(fd)


def make_directory(path: str, owner: str, group: str, mode: int) -> None:
    """mkdir, then exactly this owner, group and mode (a set-gid parent's bit is not kept)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise
    set_owner_mode(path, owner, group, mode)


def write_file(path: str, text: str, owner: str, group: str, mode: int) -> None:
    """The file's whole text, root's temporary name beside it, fsync, rename."""
    uid, gid = _ids(owner, group)
    temporary = f"{path}.dma-new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        data = text.encode("utf-8", "surrogateescape")
        while data:
            data = data[os.write(fd, data):]
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temporary)
        raise
    os.close(fd)
    os.rename(temporary, path)
    _sync_directory(os.path.dirname(path))


def write_private_file(path: str, text: str) -> None:
    """The manifest: root's, readable by all, replaced atomically."""
    write_file(path, text, "root", "root", 0o644)


def make_link(path: str, target: str) -> None:
    """A symbolic link ``path`` -> ``target``, replacing ours atomically."""
    temporary = f"{path}.dma-new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    os.symlink(target, temporary)
    os.rename(temporary, path)


def set_aside(path: str, moved_to: str, *, divert: bool) -> None:
    """Move another package's file out of the way (dpkg-divert, or a rename that never
    replaces anything)."""
    if divert:
        run(["dpkg-divert", "--local", "--rename", "--divert", moved_to, "--add", path],
            f"setting {path} aside")
        return
    os.link(path, moved_to, follow_symlinks=False)
    os.unlink(path)


def put_back(path: str, moved_to: str, *, divert: bool) -> None:
    """Undo ``set_aside``."""
    if divert:
        run(["dpkg-divert", "--local", "--rename", "--divert", moved_to, "--remove", path],
            f"putting {path} back")
        return
    os.link(moved_to, path, follow_symlinks=False)
    os.unlink(moved_to)


def remove(path: str) -> None:
    """Unlink (gone already is fine)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def remove_directory(path: str, locks: Iterable[str]) -> bool:
    """Unlink the named lock files, then rmdir; False when the directory is not empty
    (something arrived since the plan was made): it stays."""
    for name in locks:
        remove(os.path.join(path, name))
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def regroup(top: str, old: str, new: str) -> int:
    """``top`` and every entry under it whose group is ``old`` get the group ``new``,
    mode bits kept; links are changed themselves, never followed.  Returns how many."""
    try:
        old_gid = grp.getgrnam(old).gr_gid
    except KeyError:
        return 0
    new_gid = _ids("root", new)[1]
    changed = 0
    for directory, dirs, files in os.walk(top, followlinks=False):
        links = [name for name in dirs if os.path.islink(os.path.join(directory, name))]
        for path in (directory, *(os.path.join(directory, name) for name in (*files, *links))):
            changed += _regroup_one(path, old_gid, new_gid)
    return changed


def _regroup_one(path: str, old_gid: int, new_gid: int) -> int:
    info = os.lstat(path)
    if info.st_gid != old_gid:
        return 0
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        os.lchown(path, -1, new_gid)
        return 1
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    try:
        if os.fstat(fd).st_ino == info.st_ino:
            os.fchown(fd, -1, new_gid)
            os.fchmod(fd, stat.S_IMODE(info.st_mode))  # chown may clear set-id bits
    finally:
        os.close(fd)
    return 1


def systemctl(*args: str) -> None:
    """systemctl with these arguments."""
    run(["systemctl", *args], "systemd")


def start_runner(argv: Sequence[str], lock: str, wait: float = 10.0) -> int:
    """Start the queue runner detached (its own session, standard streams on
    /dev/null, a clean environment) and wait until it holds its lock; its pid."""
    child = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True, cwd="/",
        env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"})
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if child.pid in lock_holders(lock):
            return child.pid
        status = child.poll()
        if status is not None:
            raise HostCommandError(f"the queue runner {' '.join(argv)} exited {status} at once",
                                   hint="run it by hand to see why")
        time.sleep(0.05)
    return child.pid


def stop_runner(lock: str, wait: float = 30.0) -> list[int]:
    """SIGTERM to whoever holds the runner's lock; wait until the lock is free.
    The pids still holding it after ``wait`` seconds (a pass in progress)."""
    holders = lock_holders(lock)
    for pid in holders:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while holders and time.monotonic() < deadline:
        time.sleep(0.05)
        holders = lock_holders(lock)
    return holders


def _sync_directory(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe_os_error(error: OSError) -> str:
    """``Permission denied: '/x'``: the reason and the file."""
    where = f": {error.filename}" if error.filename else ""
    return f"{error.strerror or error}{where}"

