"""A lock file that holds on shared file systems (NFS included), with owner, heartbeat and expiry.

``fcntl.flock`` gives no mutual exclusion on many NFS mounts (``nolock``, ``local_lock=flock``, or servers whose
lock manager is not reachable), which is where a run store or an activation cache shared by the workers of a
cluster usually lives. :class:`FileLock` relies only on operations that are atomic on NFS, too.

Protocol
--------
*Take.* The taker writes its owner record — ``{"host", "node", "pid", "start", "token", "created", "expire"}``,
``token`` 128 random bits — to a temporary file of its own in the lock's directory (``.<lock name>.<token>.tmp``,
closed before the next step, so NFS close-to-open consistency makes its content visible), then ``os.link``-s it to
the lock's name and checks that the temporary file's ``st_nlink`` is 2 (or that the lock's record holds its
token). ``link`` fails when the name exists, and ``st_nlink`` decides even when NFS loses the reply of a ``link``
that succeeded — the safe variant of ``O_CREAT | O_EXCL`` on NFSv2/v3 that the Linux ``open(2)`` man page gives
in its notes on ``O_EXCL``. The temporary file is removed; the lock file's content never changes after that.

*Hold.* One daemon thread per process refreshes the mtime of every lock the process holds every ``heartbeat``
seconds (``os.utime``: on NFS the server's clock sets it), after checking that the lock still holds its token.

*Stale.* A lock is stale when (a) its owner ran on this machine (same host name, boot id and pid namespace) and that
process is gone — the pid is not alive, is a zombie, or now belongs to a process started at another time: stale at
once — or (b) its last heartbeat is older than the owner's ``expire`` seconds. The age is measured on the file
system's clock (the mtime of the waiter's freshly touched temporary file minus the lock's mtime), so skewed clocks
of the machines do not matter where the file server sets the times (NFS); on a file system whose clients set them
the clocks must agree to well under ``expire``.

*Take over.* A waiter that finds the lock stale takes a second lock, ``<lock>.break``, by the same link protocol
(without waiting; a stale ``.break`` is removed by the rename below), re-reads the lock and, if it is still the same
stale file (inode and token), renames it to a unique name ``.<lock name>.<token>.stale.tmp`` — of two waiters only
one rename can move that file — re-checks the moved file's identity (a live lock moved by mistake is linked back),
removes it, drops ``.break`` and then takes the lock the ordinary way. The break lock makes the check-and-rename
of concurrent breakers one step (as in Mercurial's ``lock.py``, which breaks a dead lock under ``<lock>.break``).

*Release.* The holder removes the lock file if it still holds its token (else warns with :class:`LockWarning`:
it was taken over, i.e. its heartbeat stopped for longer than ``expire``).

Limits: expiry is a lease — a holder frozen for longer than ``expire`` (a stopped process, a suspended VM) loses the
lock to a waiter without knowing it until its next heartbeat or its release (which warn). Locks are not re-entrant:
the thread that holds one gets ``False`` from a non-blocking attempt and ``RuntimeError`` from a blocking one.
Designs read (none copied): the Linux ``open(2)`` notes on ``O_EXCL``, ``flufl.lock`` (link + lifetime), Mercurial's
``lock.py`` (owner ``host:pid``, ``.break`` lock), ``filelock``.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with FileLock(d / "x.lock", timeout=10) as lock:
...     lock.held, FileLock(d / "x.lock").acquire(blocking=False)
(True, False)
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import random
import secrets
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["FileLock", "LockWarning", "DEFAULT_EXPIRE"]

#: seconds without a heartbeat after which a lock is stale (a lease; the holder refreshes it every ``expire / 6``)
DEFAULT_EXPIRE = 60.0
_POLL_FIRST, _POLL_MAX = 0.002, 0.5  # waiting: first poll interval and its cap (backs off x1.5, with jitter)


class LockWarning(UserWarning):
    """A held lock was taken over by another process (its heartbeat stopped for longer than its expiry)."""


# ----------------------------------------------------------------------------------------------- who we are
def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _node() -> str:
    """This machine and pid namespace: host name, boot id and pid-namespace inode (Linux), so that two containers
    sharing a host name, or one machine before and after a reboot, are different nodes."""
    parts = [socket.gethostname(), _read_text("/proc/sys/kernel/random/boot_id") or ""]
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc/<pid>/stat`` field 22), or None."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this node still runs: it exists, is no zombie, and started at ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    except OSError:
        return True
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is not None:
        fields = stat.rsplit(")", 1)[-1].split()
        if fields and fields[0] in ("Z", "X"):
            return False
        if start is not None and len(fields) > 19 and fields[19] != start:
            return False  # the pid was reused
    return True


_NODE = _node()
_START = _start_time(os.getpid())


# ----------------------------------------------------------------------------------------------- heartbeat
class _Heartbeat:
    """One daemon thread per process that refreshes the mtime of every held lock on its schedule."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.locks: dict[int, FileLock] = {}
        self.thread: threading.Thread | None = None

    def add(self, lock: FileLock) -> None:
        with self.cond:
            self.locks[id(lock)] = lock
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="workbench-lock-heartbeat", daemon=True)
                self.thread.start()
            self.cond.notify()

    def remove(self, lock: FileLock) -> None:
        with self.cond:
            self.locks.pop(id(lock), None)

    def _run(self) -> None:
        while True:
            with self.cond:
                now = time.monotonic()
                due = [lk for lk in self.locks.values() if lk._next_beat <= now]
                wait = min((lk._next_beat for lk in self.locks.values()), default=now + 3600) - now
                if not due:
                    self.cond.wait(timeout=max(wait, 0.001))
                    continue
            for lk in due:
                lk._beat()

    def after_fork(self) -> None:  # the child holds none of its parent's locks and has no heartbeat thread
        self.cond = threading.Condition()
        self.locks = {}
        self.thread = None


_HEARTBEAT = _Heartbeat()
_HELD: dict[str, int] = {}  # lock path -> id of the thread holding it (this process)
_HELD_GUARD = threading.Lock()


def _after_fork() -> None:
    global _HELD_GUARD, _NODE, _START
    _HEARTBEAT.after_fork()
    _HELD.clear()
    _HELD_GUARD = threading.Lock()
    _START = _start_time(os.getpid())
    _NODE = _node()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


# ----------------------------------------------------------------------------------------------- the lock
def _record(path: Path) -> tuple[dict[str, Any] | None, os.stat_result | None]:
    """``(owner record or None when unreadable, stat or None when there is no lock file)``."""
    try:
        with open(path, "rb") as f:  # stat of the open file: the record and its identity belong together
            st = os.fstat(f.fileno())
            data = f.read(4096)
    except OSError:  # FileNotFoundError: free; another error (a directory there, no permission): not readable
        return None, None
    try:
        rec = json.loads(data)
    except ValueError:
        return None, st
    return (rec if isinstance(rec, dict) else None), st


def _identity(rec: dict[str, Any] | None, st: os.stat_result) -> tuple[Any, ...]:
    return (st.st_ino, None if rec is None else rec.get("token"), None if rec is not None else st.st_size)


def _describe(rec: dict[str, Any] | None, age: float | None = None) -> str:
    if rec is None:
        return "an unreadable owner record"
    beat = "" if age is None else f", last heartbeat {age:.1f} s ago"
    return (f"pid {rec.get('pid', '?')} on host {rec.get('host', '?')} (token {str(rec.get('token', '?'))[:8]}, "
            f"since {rec.get('created', '?')}{beat})")


class FileLock:
    """An exclusive lock between processes and machines sharing a file system, held while a lock file exists.

    See the module docstring for the protocol (link + ``st_nlink``, heartbeat, expiry, take-over of stale locks).

    Parameters
    ----------
    path : the lock file (created while held, removed on release) in an existing directory.
    timeout : seconds a blocking :meth:`acquire` (and ``with``) waits before raising ``TimeoutError`` naming the
        holder; None waits for ever.
    expire : seconds without a heartbeat after which this lock, while held by us, may be taken over by a waiter
        (written into the lock file: waiters apply the holder's value). Default :data:`DEFAULT_EXPIRE`.
    heartbeat : seconds between refreshes of the lock's mtime while held; default ``expire / 6``. Must be shorter
        than ``expire``; ``0`` disables the heartbeat (for locks held far shorter than ``expire``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.lock"
    >>> with FileLock(path, timeout=30, expire=60):
    ...     path.exists()
    True
    >>> path.exists()
    False
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float | None = None, expire: float = DEFAULT_EXPIRE,
                 heartbeat: float | None = None):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
        for name, value in (("timeout", timeout), ("expire", expire), ("heartbeat", heartbeat)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value >= 0 or value == float("inf")):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        if expire is None or expire <= 0:
            raise ValueError(f"expire must be > 0 seconds (how long a lock lives without a heartbeat), got {expire!r}")
        heartbeat = expire / 6 if heartbeat is None else heartbeat
        if heartbeat >= expire:
            raise ValueError(f"heartbeat={heartbeat!r} must be shorter than expire={expire!r}, or the lock expires "
                             "between two heartbeats; pass e.g. heartbeat=expire / 6")
        self.path = Path(os.path.abspath(path))
        self.timeout, self.expire, self.heartbeat = timeout, float(expire), float(heartbeat)
        self.token: str | None = None
        self.lost = False  # set (by the heartbeat or the release) when another record replaced ours
        self._thread: int | None = None
        self._pid: int | None = None
        self._next_beat = float("inf")

    def __repr__(self) -> str:
        return f"FileLock({str(self.path)!r}, held={self.held})"

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (it may have been taken over since: see :attr:`lost`)."""
        return self.token is not None

    def owner(self) -> dict[str, Any] | None:
        """The owner record of whoever holds the lock now (None when free or unreadable)."""
        return _record(self.path)[0]

    # --- take
    def acquire(self, *, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; returns whether it is held.

        ``blocking=False``: one attempt (a stale lock is taken over), ``False`` when another process or thread
        holds it — also the thread holding it already. ``blocking=True``: waits, up to ``timeout`` seconds (default:
        the lock's ``timeout``), then raises ``TimeoutError`` naming the holder.
        """
        if self.token is not None:
            raise RuntimeError(f"this FileLock already holds {self.path}; use one FileLock object per acquisition")
        timeout = self.timeout if timeout is None else timeout
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout >= 0):
            raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
        key = str(self.path)
        with _HELD_GUARD:
            mine = _HELD.get(key) == threading.get_ident()
        if mine:
            if not blocking:
                return False
            raise RuntimeError(f"{self.path}: this thread holds the lock already and the lock is not re-entrant "
                               "(waiting would deadlock)")
        token = secrets.token_hex(16)
        rec = {"host": socket.gethostname(), "node": _NODE, "pid": os.getpid(), "start": _START, "token": token,
               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "expire": self.expire}
        tmp = self.path.with_name(f".{self.path.name}.{token}.tmp")
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = _POLL_FIRST
        seen: tuple[dict[str, Any] | None, float | None] = (None, None)
        try:
            while True:
                got, seen = self._attempt(tmp, rec, token)
                if got:
                    break
                if not blocking:
                    return False
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    holder, age = seen
                    raise TimeoutError(f"{self.path}: not acquired within timeout={timeout} s; held by "
                                       f"{_describe(holder, age)}; it is taken over when that process ends or "
                                       f"{(holder or {}).get('expire', self.expire)} s after its last heartbeat")
                pause = poll * random.uniform(0.5, 1.5)
                if deadline is not None:
                    pause = min(pause, max(deadline - now, 0.0))
                time.sleep(pause)
                poll = min(poll * 1.5, _POLL_MAX)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.token, self.lost, self._thread, self._pid = token, False, threading.get_ident(), os.getpid()
        with _HELD_GUARD:
            _HELD[key] = self._thread
        if self.heartbeat > 0:
            self._next_beat = time.monotonic() + self.heartbeat
            _HEARTBEAT.add(self)
        return True

    def _attempt(self, tmp: Path, rec: dict[str, Any], token: str) -> tuple[bool, tuple[Any, float | None]]:
        """One try: ``(taken, (holder record, heartbeat age) when not taken)``; a stale lock is broken first."""
        if not _link_take(self.path, tmp, rec, token):
            holder, st = _record(self.path)
            if st is None:  # released meanwhile: try again at once
                return _link_take(self.path, tmp, rec, token), (None, None)
            age = _fs_now(tmp) - st.st_mtime
            if not _stale(holder, age, self.expire):
                return False, (holder, age)
            if not _break(self.path, holder, st, self.expire):
                return False, (holder, age)
            return _link_take(self.path, tmp, rec, token), (holder, age)
        return True, (None, None)

    # --- hold
    def _beat(self) -> None:
        with _HEARTBEAT.cond:
            if self.token is None:
                return
            self._next_beat = time.monotonic() + self.heartbeat
        rec, st = _record(self.path)
        if rec is not None and rec.get("token") == self.token:
            with contextlib.suppress(OSError):
                os.utime(self.path)
        elif st is not None:  # another record there: taken over (a missing file moved with its directory)
            self.lost = True

    # --- release
    def release(self) -> None:
        """Remove the lock file (when it still holds our token; a lock taken over meanwhile warns)."""
        if self.token is None:
            raise RuntimeError(f"{self.path}: release() of a FileLock that is not held")
        _HEARTBEAT.remove(self)
        token, self.token = self.token, None
        with _HELD_GUARD:
            if _HELD.get(str(self.path)) == self._thread:
                del _HELD[str(self.path)]
        if os.getpid() != self._pid:
            return  # a forked child leaving a block its parent entered: the lock is the parent's
        rec, st = _record(self.path)
        if st is None:
            return  # gone with its directory (a run deleted or an import renamed into place while held)
        if rec is not None and rec.get("token") == token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            self.lost = True
            warnings.warn(f"{self.path}: this lock was taken over while held (now held by {_describe(rec)}); its "
                          f"heartbeat must have stopped for longer than expire={self.expire} s", LockWarning,
                          stacklevel=2)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _write_record(tmp: Path, rec: dict[str, Any]) -> None:
    data = json.dumps(rec, sort_keys=True).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        if tmp.parent.is_dir():
            raise
        raise FileNotFoundError(errno.ENOENT, f"{tmp.parent}: the directory of the lock file is missing (create it, "
                                              "or it was removed while waiting)", str(tmp.parent)) from None
    try:
        os.write(fd, data)
    finally:
        os.close(fd)  # close before link: NFS close-to-open makes the record visible to the next opener


def _link_take(path: Path, tmp: Path, rec: dict[str, Any], token: str) -> bool:
    """Link our record to ``path``; whether we own it now (``st_nlink == 2`` of our file, or our token there)."""
    for _ in range(3):
        if not tmp.exists():  # first attempt, or removed by a clean-up of temporary files
            _write_record(tmp, rec)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except FileNotFoundError:
            continue  # our temporary file vanished before the link: write it again
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.EIO, errno.ETIMEDOUT):
                raise OSError(err.errno, f"{path}: cannot create the lock file ({err.strerror}); the lock needs a "
                                         "directory it can create files and hard links in") from err
        try:
            if os.stat(tmp).st_nlink == 2:
                return True
        except FileNotFoundError:
            pass
        holder = _record(path)[0]
        return holder is not None and holder.get("token") == token
    return False


def _fs_now(tmp: Path) -> float:
    """Now on the file system's clock: the mtime of our freshly touched temporary file (local time if that fails)."""
    try:
        os.utime(tmp)
        return os.stat(tmp).st_mtime
    except OSError:
        return time.time()


def _stale(rec: dict[str, Any] | None, age: float, expire: float) -> bool:
    """Whether a lock with owner record ``rec`` and heartbeat age ``age`` seconds is stale (module docstring)."""
    if (rec is not None and rec.get("node") == _NODE and isinstance(rec.get("pid"), int)
            and not _alive(rec["pid"], rec.get("start"))):
        return True
    limit = expire
    if rec is not None and isinstance(rec.get("expire"), (int, float)) and rec["expire"] > 0:
        limit = float(rec["expire"])
    return age > limit


def _break(path: Path, rec: dict[str, Any] | None, st: os.stat_result, expire: float) -> bool:
    """Remove the stale lock ``path`` (seen as ``rec`` / ``st``) under ``<path>.break``; whether it was removed by
    us (False: another waiter is breaking it, or it changed)."""
    brk = path.with_name(path.name + ".break")
    token = secrets.token_hex(16)
    brec = {"host": socket.gethostname(), "node": _NODE, "pid": os.getpid(), "start": _START, "token": token,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "expire": expire}
    btmp = brk.with_name(f".{brk.name}.{token}.tmp")
    try:
        if not _link_take(brk, btmp, brec, token):
            holder, bst = _record(brk)
            if bst is not None and _stale(holder, _fs_now(btmp) - bst.st_mtime, expire):
                _rename_aside(brk, _identity(holder, bst))  # a breaker died within its break: drop its lock
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(btmp)
    try:
        now_rec, now_st = _record(path)
        if now_st is None or _identity(now_rec, now_st) != _identity(rec, st):
            return False  # released or replaced since we looked
        return _rename_aside(path, _identity(rec, st))
    finally:
        brec_now = _record(brk)[0]
        if brec_now is not None and brec_now.get("token") == token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(brk)


def _rename_aside(path: Path, identity: tuple[Any, ...]) -> bool:
    """Rename the lock file ``path`` to a unique name, check it is the file we judged stale (else link it back),
    and remove it; whether the stale file was removed by us."""
    aside = path.with_name(f".{path.name}.{secrets.token_hex(8)}.stale.tmp")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False  # another waiter moved it first
    rec, st = _record(aside)
    if st is not None and _identity(rec, st) != identity:  # a live lock, created after we looked: put it back
        try:
            os.link(aside, path)
        except FileExistsError:
            warnings.warn(f"{path}: a live lock was moved aside while breaking a stale one and could not be put "
                          f"back ({_describe(rec)} loses it)", LockWarning, stacklevel=3)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(aside)
    return True
