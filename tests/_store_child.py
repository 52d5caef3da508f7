"""Child process of tests/test_store_integrity.py: trains tiny runs and SIGKILLs itself at chosen write points.

    python tests/_store_child.py SPEC_JSON

SPEC: {"config": {...}, "reference": DIR, "trials": [{"store": DIR, "kill_at": k, "op": "train"|"delete"}, ...]}

Torch is imported once (one thread); each training, killed or not, runs in a forked grandchild, so every trial
starts from a fresh process image. A *write point* is a call of ``os.replace``, ``os.rename``, ``os.fsync``
(counted, not run: a kill loses nothing the page cache holds), ``os.unlink``, ``os.rmdir``, ``shutil.rmtree``,
``torch.save``, ``safetensors.torch.save_file`` or ``tempfile.mkstemp`` / ``mkdtemp``; the grandchild kills
itself (SIGKILL) just before the ``kill_at``-th one — for ``torch.save`` / ``save_file``, after writing half the
file (a torn write). A trial: kill at ``kill_at`` while training (or while deleting the finished run), record what
a reader then sees, resume (train again) in a fresh grandchild to completion. Prints one JSON line: the number of
write points of the reference run, and per trial how the killed process ended, what a reader saw after the kill
and how the resume ended.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def _install_kill_hook(kill_at: int, counter: list[int]) -> None:
    import shutil
    import tempfile

    import safetensors.torch
    import torch

    def wrap(owner, name, torn=False, original=None):
        original = original or getattr(owner, name)

        def hooked(*args, **kwargs):
            counter[0] += 1
            if counter[0] == kill_at:
                if torn:  # write the file, keep half of it, die: a write torn by the kill
                    original(*args, **kwargs)
                    target = args[1]
                    path = target if isinstance(target, (str, os.PathLike)) else None
                    if path is not None and os.path.exists(path):
                        os.truncate(path, os.path.getsize(path) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        setattr(owner, name, hooked)

    for name in ("replace", "rename", "unlink", "rmdir"):
        wrap(os, name)
    # a kill loses nothing the page cache holds: fsync is a write point here but skipped (it only costs time)
    wrap(os, "fsync", original=lambda fd: None)
    wrap(shutil, "rmtree")
    wrap(tempfile, "mkstemp")
    wrap(tempfile, "mkdtemp")
    wrap(torch, "save", torn=True)
    wrap(safetensors.torch, "save_file", torn=True)


def _in_child(fn, kill_at: int = 0) -> tuple[int, int]:
    """Run ``fn()`` in a forked process (killing itself at write point ``kill_at``; 0: never). Returns
    ``(how it ended: exit code, or -signal, the number of write points it passed)``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        code = 0
        try:
            counter = [0]
            _install_kill_hook(kill_at, counter)
            fn()
            os.write(w, str(counter[0]).encode())
        except BaseException:  # reported through the exit code
            import traceback

            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        passed = f.read()
    _, status = os.waitpid(pid, 0)
    ended = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return ended, int(passed or 0)


def main() -> None:
    spec = json.loads(sys.argv[1])
    import torch

    torch.set_num_threads(1)
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo once, not in every child
    import workbench.train.augment
    import workbench.train.objectives
    import workbench.train.recorders  # noqa: F401 - imported once, not in every child
    from workbench.runs import RunStore
    from workbench.train import train

    config = spec["config"]

    def train_in(store):
        return lambda: train(config, store, progress=False)

    ended, points = _in_child(train_in(spec["reference"]))
    assert ended == 0, f"the reference run failed ({ended})"
    out = {"write_points": points, "trials": []}
    for trial in spec["trials"]:
        store = trial["store"]
        if trial["op"] == "delete":
            assert _in_child(train_in(store))[0] == 0
            ended, _ = _in_child(lambda store=store: RunStore(store).delete(RunStore(store).ids()[0]),
                                 trial["kill_at"])
        else:
            ended, _ = _in_child(train_in(store), trial["kill_at"])
        # what a reader sees right after the kill (in a fresh process: nothing cached here)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            leftovers = [str(q.relative_to(store)) for q in Path(store).rglob("*")
                         if q.name.endswith(".tmp") or q.name.startswith((".tmp-", ".old-", ".deleted-"))]
            s = RunStore(store)
            seen = {"leftovers": leftovers, "ids": s.ids(), "states": [run.status["state"] for run in s.runs()],
                    "listed": s.list()["state"].tolist()}
            os.write(w, json.dumps(seen).encode())
            os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            seen = json.loads(f.read() or "{}")
        os.waitpid(pid, 0)
        resumed, _ = _in_child(train_in(store))
        out["trials"].append({**trial, "ended": ended, "seen": seen, "resumed": resumed})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
