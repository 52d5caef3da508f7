"""Executors for :class:`workbench.study.Study`: run a study's jobs in a process pool, on a Ray cluster or on Slurm.

A :class:`~workbench.study.Study` hands its executor :func:`~workbench.study.run_job` and one picklable
:class:`~workbench.study.StudyJob` per run; the executor's ``map(fn, jobs)`` yields ``(job, result_or_exception)``
as jobs finish. Every executor here shares that loop (:class:`Executor`):

- jobs of the same run (same store and ``job.config.id``: two labels of one grid point, or one subject listed
  twice) are merged into one task, so the run is trained once; each job still gets its own result (its rows);
- a job that raises is reported as its exception, the other jobs go on;
- at most ``max_concurrent`` tasks are in flight, and results are yielded as tasks finish (the study's progress
  bar moves as they do);
- nothing is kept between calls but the run store: re-running a study after a crash reuses every finished run
  (``workbench.train.train`` returns a finished run, and resumes an interrupted one from its last checkpoint).

Optional engines are imported when an executor runs, never by ``import workbench``:
``pip install 'workbench[ray]'`` for :class:`RayExecutor`, ``pip install 'workbench[slurm]'`` for
:class:`SubmititExecutor`.

Example
-------
>>> from workbench.study import Study
>>> from workbench.executors import PoolExecutor
>>> study = Study(base, vary={"lr": [1e-3, 3e-3]}, executor=PoolExecutor(2))  # doctest: +SKIP
>>> table = study.run()                                                          # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import numbers
import os
import pickle
import time
import traceback
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

__all__ = ["Executor", "Task", "CheckpointableTask", "group_jobs", "PoolExecutor",
           "RayExecutor", "SubmititExecutor", "make_executor", "EXECUTORS"]

#: names accepted by :func:`make_executor`
EXECUTORS = ("inprocess", "pool", "ray", "slurm")


# ------------------------------------------------------------------------------------------ shared pieces
def _import(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this executor needs {module!r}, which is not installed: pip install 'workbench[{extra}]' "
                          f"(or pip install {module})") from err


def _check_count(value: Any, what: str, *, none: bool = True) -> int | None:
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be a positive integer{' or None' if none else ''}, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be a positive integer{' or None' if none else ''}, got {value}")
    return int(value)


def _run_key(job: Any, index: int) -> Any:
    """Jobs with the same key share one run: the store and the run id (``job.config.id``); else the job's
    position (never merged)."""
    run_id = getattr(getattr(job, "config", None), "id", None)
    if not isinstance(run_id, str):
        return ("job", index)
    return ("run", str(getattr(job, "store_root", "")), run_id)


def group_jobs(jobs: Iterable[Any]) -> list[list[Any]]:
    """``jobs`` merged by run (:func:`_run_key`), in the order each run first appears.

    Example
    -------
    >>> group_jobs(["a", "b"])  # jobs without a config are never merged
    [['a'], ['b']]
    """
    groups: dict[Any, list[Any]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(_run_key(job, index), []).append(job)
    return list(groups.values())


def _portable(err: BaseException) -> BaseException:
    """``err`` if it pickles (it crosses a process boundary), else a RuntimeError with its type, message and
    traceback."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        return RuntimeError(f"{type(err).__name__}: {err}\n{text}")


class Task:
    """The unit an engine runs: ``fn`` applied to each job of one run's group, in order, in one process.

    Returns one entry per job — its result, or the exception it raised (made picklable) — so one failing job
    does not hide the others. ``threads`` pins torch's intra-op threads for the task (None: the training thread
    policy of :mod:`workbench._threads` decides). Picklable when ``fn`` and the jobs are.

    Example
    -------
    >>> Task(abs, [-1, 2])()
    [1, 2]
    """

    def __init__(self, fn: Callable[[Any], Any], jobs: Sequence[Any], threads: int | None = None):
        self.fn, self.jobs, self.threads = fn, list(jobs), threads

    def __call__(self) -> list[Any]:
        with _pinned(self.threads):
            out = []
            for job in self.jobs:
                try:
                    out.append(self.fn(job))
                except Exception as err:  # one failing job keeps the others of the group
                    out.append(_portable(err))
            return out


@contextlib.contextmanager
def _pinned(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    from ._threads import torch_threads

    with torch_threads(threads), threadpool_limits(limits=threads):
        yield


class CheckpointableTask(Task):
    """:class:`Task` following submitit's checkpoint protocol (:class:`submitit.helpers.Checkpointable`): on
    preemption or timeout it is resubmitted as it is, and the run store resumes each of its runs from the run's
    last checkpoint (finished runs are reused)."""

    def __submitit_checkpoint__(self, *args: Any, **kwargs: Any) -> Any:
        submitit = _import("submitit", "slurm")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    checkpoint = __submitit_checkpoint__


class Executor:
    """Base of the executors: merges jobs of one run, bounds the tasks in flight and yields results as tasks
    finish. A subclass provides :meth:`_session`, a context manager yielding an object with ``submit(task) ->
    handle``, ``wait(handles) -> finished handles`` and ``result(handle) -> list`` (raising when the task as a
    whole failed, e.g. its worker died: then every job of the task gets that exception), and optionally
    ``submit_many(tasks) -> handles`` (used when nothing bounds the tasks in flight, e.g. one Slurm array).
    """

    max_concurrent: int | None = None
    threads: int | None = None

    def _session(self) -> contextlib.AbstractContextManager:
        raise NotImplementedError

    def _task_type(self) -> type:
        return Task

    def map(self, fn: Callable[[Any], Any], jobs: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """Run ``fn(job)`` for every job; yield ``(job, result_or_exception)`` as they finish.

        Example
        -------
        >>> for job, result in PoolExecutor(2).map(run_job, study.jobs()):  # doctest: +SKIP
        ...     print(job.label, type(result).__name__)
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable (e.g. workbench.study.run_job), got {type(fn).__name__}")
        make = self._task_type()
        tasks = deque(make(fn, group, self.threads) for group in group_jobs(jobs))
        if not tasks:
            return
        limit = self.max_concurrent
        with self._session() as session:
            running: dict[Any, Task] = {}
            if limit is None and hasattr(session, "submit_many"):
                batch = list(tasks)
                tasks.clear()
                running.update(zip(session.submit_many(batch), batch))
            try:
                while tasks or running:
                    while tasks and (limit is None or len(running) < limit):
                        task = tasks.popleft()
                        running[session.submit(task)] = task
                    for handle in session.wait(list(running)):
                        task = running.pop(handle)
                        try:
                            results = list(session.result(handle))
                            if len(results) != len(task.jobs):
                                raise RuntimeError(f"a task returned {len(results)} results for {len(task.jobs)} "
                                                   "jobs")
                        except Exception as err:  # the task as a whole failed: each of its jobs reports it
                            results = [err] * len(task.jobs)
                        yield from zip(task.jobs, results)
            finally:  # the caller stopped early (or an error): cancel what is still out
                if running and hasattr(session, "cancel"):
                    session.cancel(list(running))


# ------------------------------------------------------------------------------------------ process pool
_DEVICE_PREFIXES = ("cpu", "cuda", "mps")


def _check_devices(devices: Any) -> list[str] | None:
    if devices is None:
        return None
    if isinstance(devices, str) or not isinstance(devices, (list, tuple)):
        raise TypeError(f"devices must be a list of device names, one per worker, e.g. ['cuda:0', 'cuda:1'], got "
                        f"{devices!r}")
    if not devices:
        raise ValueError("devices is empty; give one device per worker, e.g. ['cuda:0', 'cuda:1'], or None")
    out = []
    for d in devices:
        name = str(d)
        kind, _, index = name.partition(":")
        if kind not in _DEVICE_PREFIXES or (index and not index.isdigit()):
            raise ValueError(f"devices has {d!r}; use 'cpu', 'cuda:N' or 'mps' (one per worker)")
        out.append(name)
    return out


def _init_worker(devices: Any, threads: int | None) -> None:
    """Pool worker start: take one device from the queue (before CUDA is initialised) and pin the threads."""
    if devices is not None:
        device = devices.get()
        kind, _, index = device.partition(":")
        if kind == "cuda":
            os.environ["CUDA_VISIBLE_DEVICES"] = index or "0"
        elif kind == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if threads is not None:
        from ._threads import thread_env

        os.environ.update(thread_env(threads))
        import sys

        if "torch" in sys.modules:  # the spawned worker re-imported a __main__ that imports torch
            sys.modules["torch"].set_num_threads(threads)


class _PoolSession:
    """Submits to a pool made by ``make``; a pool broken by a dead worker is replaced for the tasks still to run
    (the tasks that were in it report ``BrokenProcessPool``)."""

    def __init__(self, make):
        self.make, self.pool = make, make()

    def submit(self, task: Task):
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self.pool.submit(task)
        except BrokenProcessPool:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = self.make()
            return self.pool.submit(task)

    def wait(self, handles):
        import concurrent.futures as cf

        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def result(self, handle):
        return handle.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class PoolExecutor(Executor):
    """A pool of worker processes on this machine (:class:`concurrent.futures.ProcessPoolExecutor`).

    Parameters
    ----------
    workers : worker processes (default: one per device, else one per usable core).
    devices : one device per worker, e.g. ``["cuda:0", "cuda:1"]``: worker *i* sees only its GPU
        (``CUDA_VISIBLE_DEVICES`` is set in the worker before CUDA starts), ``"cpu"`` hides the GPUs. With
        ``workers`` too, the two must agree. Default: every worker sees what this process sees.
    mp_context : multiprocessing start method; ``"spawn"`` (default) is safe with torch and CUDA.
    threads : torch intra-op (and BLAS) threads per worker, default 1; None leaves it to the training thread
        policy.

    A job that raises is reported as its exception. A worker that dies (killed, out of memory) breaks the pool:
    the jobs then running (at most ``workers`` runs) report ``BrokenProcessPool`` and the remaining ones run in a
    fresh pool; re-run the study for the failed ones (finished runs are reused, interrupted ones resume).

    Example
    -------
    >>> study = Study(base, vary={"lr": [1e-3, 3e-3]}, executor=PoolExecutor(2))  # doctest: +SKIP
    >>> gpus = PoolExecutor(devices=["cuda:0", "cuda:1"])                          # doctest: +SKIP
    """

    def __init__(self, workers: int | None = None, *, devices: Sequence[str] | None = None,
                 mp_context: str = "spawn", threads: int | None = 1):
        import multiprocessing

        from ._threads import usable_cores

        self.devices = _check_devices(devices)
        workers = _check_count(workers, "workers")
        if self.devices is not None and workers is not None and workers != len(self.devices):
            raise ValueError(f"workers={workers} but {len(self.devices)} devices were given; give one device per "
                             "worker (or leave workers=None)")
        self.workers = workers or (len(self.devices) if self.devices else usable_cores())
        if mp_context not in multiprocessing.get_all_start_methods():
            raise ValueError(f"mp_context must be one of {multiprocessing.get_all_start_methods()}, got "
                             f"{mp_context!r}")
        self.mp_context = mp_context
        self.threads = _check_count(threads, "threads")
        self.max_concurrent = self.workers  # tasks wait here, not in the pool: a dead worker fails only its peers

    def __repr__(self) -> str:
        return f"PoolExecutor({self.workers}, devices={self.devices}, mp_context={self.mp_context!r})"

    @contextlib.contextmanager
    def _session(self):
        import concurrent.futures as cf
        import multiprocessing

        ctx = multiprocessing.get_context(self.mp_context)

        def make():
            queue = None
            if self.devices is not None:  # each worker takes one device as it starts
                queue = ctx.Queue()
                for d in self.devices:
                    queue.put(d)
            return cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                          initargs=(queue, self.threads))

        session = _PoolSession(make)
        try:
            yield session
        finally:
            session.close()


# ------------------------------------------------------------------------------------------ Ray
def _ray_call(task: Task) -> list[Any]:
    return task()


class _RaySession:
    def __init__(self, ray, remote):
        self.ray, self.remote = ray, remote

    def submit(self, task: Task):
        return self.remote.remote(task)

    def wait(self, handles):
        done, _ = self.ray.wait(handles, num_returns=1)
        return done

    def cancel(self, handles):
        for h in handles:
            self.ray.cancel(h, force=True)

    def result(self, handle):
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as err:  # the task itself raised: its cause, not the wrapper
            cause = getattr(err, "cause", None)
            raise (cause if isinstance(cause, BaseException) else err) from None


class RayExecutor(Executor):
    """Ray remote tasks, one per run, with per-task resources.

    Parameters
    ----------
    address : join this running cluster (``"auto"``, ``"ray://host:10001"``, ...). Default: the cluster Ray is
        already connected to in this process, else a local cluster started here (``ray.init(num_cpus=<usable
        cores>, include_dashboard=False)``) and shut down when the study's jobs are done.
    num_cpus : CPUs each task reserves (> 0).
    num_gpus : GPUs each task reserves (>= 0; fractional values share a GPU, e.g. 0.5: two runs per GPU).
    max_concurrent : tasks in flight at once (default: as many as there are runs; Ray queues what does not fit).
    init_options : further keyword arguments of ``ray.init`` (e.g. ``{"num_cpus": 8}`` for the local cluster, or
        ``{"runtime_env": {...}}``).
    threads : torch intra-op threads per task (default: ``num_cpus`` rounded down, at least 1).

    Example
    -------
    >>> Study(base, vary={"lr": [1e-3, 3e-3]}, executor=RayExecutor(num_gpus=0.5)).run()  # doctest: +SKIP
    """

    def __init__(self, *, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 max_concurrent: int | None = None, init_options: Mapping[str, Any] | None = None,
                 threads: int | None = None):
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a Ray address string (e.g. 'auto') or None, got {address!r}")
        for value, what in ((num_cpus, "num_cpus"), (num_gpus, "num_gpus")):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{what} must be a number, got {value!r}")
        if not num_cpus > 0:
            raise ValueError(f"num_cpus must be > 0 (CPUs each task reserves), got {num_cpus}")
        if num_gpus < 0:
            raise ValueError(f"num_gpus must be >= 0 (GPUs each task reserves; 0.5 shares a GPU), got {num_gpus}")
        if init_options is not None and not isinstance(init_options, Mapping):
            raise TypeError(f"init_options must be a dict of ray.init keyword arguments, got "
                            f"{type(init_options).__name__}")
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.max_concurrent = _check_count(max_concurrent, "max_concurrent")
        self.init_options = dict(init_options or {})
        self.threads = _check_count(threads, "threads") or max(1, int(num_cpus))

    def __repr__(self) -> str:
        return (f"RayExecutor(address={self.address!r}, num_cpus={self.num_cpus}, num_gpus={self.num_gpus}, "
                f"max_concurrent={self.max_concurrent})")

    @contextlib.contextmanager
    def _session(self):
        ray = _import("ray", "ray")
        from ._threads import usable_cores

        started = False
        if not ray.is_initialized():
            options = dict(self.init_options)
            if self.address is None:
                options.setdefault("num_cpus", usable_cores())
                options.setdefault("include_dashboard", False)
                started = True
            else:
                options["address"] = self.address
            options.setdefault("log_to_driver", False)
            ray.init(**options)
        remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus)(_ray_call)
        try:
            yield _RaySession(ray, remote)
        finally:
            if started:  # only a cluster this executor started
                ray.shutdown()


# ------------------------------------------------------------------------------------------ submitit / Slurm
_CLUSTERS = (None, "slurm", "local", "debug")


class _SubmititSession:
    def __init__(self, executor, poll: float):
        self.executor, self.poll = executor, poll

    def submit(self, task: Task):
        return self.executor.submit(task)

    def submit_many(self, tasks: list[Task]):
        with self.executor.batch():  # one job array
            jobs = [self.executor.submit(task) for task in tasks]
        return jobs

    def wait(self, handles):
        while True:
            done = [h for h in handles if h.done()]
            if done:
                return done
            time.sleep(self.poll)

    def result(self, handle):
        return handle.result()

    def cancel(self, handles):
        for h in handles:
            h.cancel(check=False)


class SubmititExecutor(Executor):
    """Jobs on Slurm through submitit (or submitit's local executor): one job per run, as a job array.

    Parameters
    ----------
    folder : submitit's folder for job scripts, pickles and logs (on storage the nodes share, like the run store).
    cluster : ``"slurm"``, ``"local"`` (subprocesses on this machine), ``"debug"`` (in this process) or None
        (Slurm when ``sbatch`` is found, else local).
    max_concurrent : tasks running at once — the Slurm array's parallelism (``%N``); on ``"local"`` the
        subprocesses in flight (default: usable cores).
    timeout_min : wall-clock limit of each job in minutes.
    slurm_options : further Slurm parameters of submitit (``partition``, ``gpus_per_node``, ``cpus_per_task``,
        ``mem_gb``, ``account``, ...), with or without the ``slurm_`` prefix.
    requeue : on preemption or timeout, checkpoint (submitit's ``checkpoint`` protocol: the same task is
        resubmitted) and requeue; the run store resumes each run from its last checkpoint.
    threads : torch intra-op threads per job (default 1).

    Example
    -------
    >>> ex = SubmititExecutor("~/slurm-logs", cluster="slurm", max_concurrent=8,
    ...                       slurm_options={"partition": "gpu", "gpus_per_node": 1})  # doctest: +SKIP
    >>> Study(base, vary={"lr": [1e-3, 3e-3]}, store="/shared/runs", executor=ex).run()  # doctest: +SKIP
    """

    def __init__(self, folder: str | os.PathLike, *, cluster: str | None = None, max_concurrent: int | None = None,
                 timeout_min: float = 60, slurm_options: Mapping[str, Any] | None = None, requeue: bool = True,
                 threads: int | None = 1, poll_s: float = 0.5):
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"folder must be a directory path (submitit's logs and pickles), got {folder!r}")
        if cluster not in _CLUSTERS:
            raise ValueError(f"cluster must be one of {list(_CLUSTERS)}, got {cluster!r}")
        if isinstance(timeout_min, bool) or not isinstance(timeout_min, numbers.Real) or not timeout_min > 0:
            raise ValueError(f"timeout_min must be a positive number of minutes, got {timeout_min!r}")
        if slurm_options is not None and not isinstance(slurm_options, Mapping):
            raise TypeError(f"slurm_options must be a dict of submitit Slurm parameters, got "
                            f"{type(slurm_options).__name__}")
        if not isinstance(requeue, bool):
            raise TypeError(f"requeue must be True or False, got {requeue!r}")
        if isinstance(poll_s, bool) or not isinstance(poll_s, numbers.Real) or not poll_s > 0:
            raise ValueError(f"poll_s must be a positive number of seconds, got {poll_s!r}")
        self.folder, self.cluster = os.fspath(folder), cluster
        self.array_parallelism = _check_count(max_concurrent, "max_concurrent")
        self.timeout_min, self.requeue, self.poll_s = timeout_min, requeue, float(poll_s)
        self.slurm_options = {(k if str(k).startswith("slurm_") else f"slurm_{k}"): v
                              for k, v in (slurm_options or {}).items()}
        self.threads = _check_count(threads, "threads")

    def __repr__(self) -> str:
        return (f"SubmititExecutor({self.folder!r}, cluster={self.cluster!r}, "
                f"max_concurrent={self.array_parallelism}, timeout_min={self.timeout_min})")

    def _make(self):
        submitit = _import("submitit", "slurm")
        from ._threads import usable_cores

        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        params: dict[str, Any] = {"timeout_min": self.timeout_min, **self.slurm_options}
        if executor.cluster == "slurm":
            self.max_concurrent = None  # one array; Slurm bounds it
            if self.array_parallelism is not None:
                params["slurm_array_parallelism"] = self.array_parallelism
        else:
            self.max_concurrent = self.array_parallelism or usable_cores()
        executor.update_parameters(**params)
        return executor

    def _task_type(self) -> type:
        return CheckpointableTask if self.requeue else Task

    @contextlib.contextmanager
    def _session(self):
        yield _SubmititSession(self._make(), self.poll_s)


# ------------------------------------------------------------------------------------------ by name
def make_executor(name: str, **options: Any) -> Any:
    """The executor called ``name`` with ``options`` (the keyword arguments of its class).

    ``"inprocess"``: :class:`workbench.study.InProcessExecutor` (no options); ``"pool"``: :class:`PoolExecutor`;
    ``"ray"``: :class:`RayExecutor`; ``"slurm"``: :class:`SubmititExecutor` (``folder=`` required).

    Example
    -------
    >>> make_executor("pool", workers=2)
    PoolExecutor(2, devices=None, mp_context='spawn')
    """
    import inspect

    from .study import InProcessExecutor

    classes = {"inprocess": InProcessExecutor, "pool": PoolExecutor, "ray": RayExecutor, "slurm": SubmititExecutor}
    if not isinstance(name, str) or name not in classes:
        raise ValueError(f"unknown executor {name!r}; choose from {list(EXECUTORS)}")
    cls = classes[name]
    params = inspect.signature(cls).parameters
    accepted = [p for p in params if params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"executor {name!r} does not take option(s) {unknown}; it takes {accepted or 'none'}")
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in options
               and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
    if missing:
        raise TypeError(f"executor {name!r} needs option(s) {missing}, e.g. make_executor('slurm', "
                        "folder='slurm-logs')")
    return cls(**options)
