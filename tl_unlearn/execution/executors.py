"""Units of work that travel: a sweep as JSON specs, run in-process or on a Ray cluster.

A sweep is cut into **units**: small JSON-serialisable specs (which component to ablate, on
which shard of the data). A **worker** rebuilds everything it needs from the job's spec once
(the model, the data, the ablation means, the clean baseline) and evaluates units; it returns
an :class:`~tl_unlearn.metrics.evaluation.Evaluation` with its per-sequence statistics, as a
dict. The same worker code runs in every executor:

- ``executor="inprocess"`` (the default): one worker in this process;
- ``executor="ray"``: one worker per Ray actor (``ray.init(address)``, or a local cluster
  when no address is given), each with its threads set explicitly (Ray gives an actor one
  by default). A unit whose actor dies is retried on a new actor.

Results are merged in a fixed order (by component, shards in order) from the per-sequence
statistics, so every executor gives the same metrics and, for the same seed, the same
bootstrap intervals. With a run folder (:class:`RunFolder`), each finished unit is written
there atomically; ``resume=True`` reads the finished ones back and computes only the rest.

This module holds where units run (:class:`Execution`) and the executors; units, shards
and run folders are in :mod:`tl_unlearn.execution.units` and
:mod:`tl_unlearn.execution.run_folder`. What runs is defined above this layer: the
benchmark's units (:mod:`tl_unlearn.benchmark.units`, through
``run_benchmark(executor=...)``) and the component-map and attribution jobs
(:mod:`tl_unlearn.benchmark.jobs`). Ray is an optional dependency:
``pip install 'tl_unlearn[ray]'``.

Examples:
    >>> Execution.of("ray").actors, Execution.of("inprocess").remote
    (2, False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from tl_unlearn.core.checks import check_positive_ints

__all__ = [
    "LOOPBACK",
    "ClusterError",
    "connect_cluster",
    "release_cluster",
    "EXECUTORS",
    "Execution",
    "InProcessExecutor",
    "RayExecutor",
    "open_executor",
]


EXECUTORS = ("inprocess", "ray")


@dataclass(frozen=True)
class Execution:
    """Where units run: in this process (the default) or on Ray actors.

    Attributes:
        kind: ``"inprocess"`` or ``"ray"``.
        actors: Ray actors (each loads the model and data once).
        address: A Ray cluster's address (default: start a local one).
        threads: Torch threads per Ray actor (Ray gives an actor one by default).
        num_gpus: GPUs per actor (a fraction shares one GPU between small models).

    Examples:
        >>> from tl_unlearn import Execution
        >>> Execution.of("ray").actors
        2
        >>> Execution.of("dask")
        Traceback (most recent call last):
        ...
        ValueError: Unknown executor 'dask'; choose one of ('inprocess', 'ray').
    """

    kind: str = "inprocess"
    actors: int = 2
    address: str | None = None
    threads: int = 1
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"Unknown executor {self.kind!r}; choose one of {EXECUTORS}.")
        check_positive_ints(self, "actors", "threads")
        if not isinstance(self.num_gpus, (int, float)) or self.num_gpus < 0:
            raise ValueError(f"num_gpus must be a number >= 0, got {self.num_gpus!r}.")

    @classmethod
    def of(cls, executor: str | Execution) -> Execution:
        """``executor`` as an :class:`Execution` (a name takes the defaults)."""
        return executor if isinstance(executor, Execution) else cls(executor)

    @property
    def remote(self) -> bool:
        return self.kind == "ray"


#: The address a local cluster's servers listen on: loopback, so that no other machine can
#: reach it (a Ray cluster has no authentication of its own to rely on).
LOOPBACK = "127.0.0.1"

_STARTED_HERE: list[bool] = [False]


class ClusterError(RuntimeError):
    """A Ray cluster could not be started or reached (the message says what to try)."""  # whether this process started the running local cluster


def _import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "executor='ray' needs Ray: pip install 'tl_unlearn[ray]' (or pip install ray)."
        ) from None
    return ray


@contextmanager
def _loopback_node(ray: Any) -> Iterator[None]:
    """Let ``ray.init(_node_ip_address="127.0.0.1")`` keep the loopback address: Ray replaces
    a local address by the machine's network address, and its servers listen on the node's
    address. Restored on exit."""
    services = ray._private.services
    resolve = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host
    try:
        yield
    finally:
        services.resolve_ip_for_localhost = resolve


def connect_cluster(execution: Execution) -> bool:
    """Connect to ``execution.address``, or start a local cluster that listens on loopback
    only; do nothing when Ray is already initialised. Call it before any heavy work, so that a
    cluster that cannot start fails fast.

    Args:
        execution: Where units run; its ``address`` (``None``: a local cluster), ``actors``
            and ``threads`` (the local cluster's CPUs).

    Returns:
        Whether this call started a local cluster (:func:`release_cluster` stops it).

    Raises:
        ModuleNotFoundError: Ray is not installed.
        ClusterError: The cluster could not be started or reached (a RuntimeError); the
            message says what to try instead.

    Examples:
        >>> connect_cluster(Execution("ray", address="127.0.0.1:1"))
        Traceback (most recent call last):
        ...
        tl_unlearn.execution.executors.ClusterError: Could not connect to the Ray cluster at '127.0.0.1:1' (ConnectionError: ...
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    try:
        if execution.address:
            _check_reachable(execution.address)
            ray.init(address=execution.address, log_to_driver=False)
        else:
            with _loopback_node(ray):
                ray.init(
                    num_cpus=execution.actors * execution.threads,
                    include_dashboard=False,
                    log_to_driver=False,
                    _node_ip_address=LOOPBACK,
                )
    except Exception as e:  # Ray raises several types for a node that did not come up
        where = (
            f"connect to the Ray cluster at {execution.address!r}"
            if execution.address
            else f"start a local Ray cluster for {execution.actors} actor(s)"
        )
        raise ClusterError(
            f"Could not {where} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "Try the address of a running cluster (--ray ADDRESS, started with `ray start "
            "--head`), fewer actors (--actors 1), or the in-process default (leave out --ray)."
        ) from e
    _STARTED_HERE[0] = not execution.address
    return _STARTED_HERE[0]


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse at once a ``host:port`` nothing answers on (Ray itself waits minutes, then
    exits the process)."""
    import re
    import socket

    m = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address)
    if m is None:  # "auto" and other forms Ray resolves itself
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {address} ({e.strerror or e})") from e


def release_cluster() -> None:
    """Stop the local cluster :func:`connect_cluster` started (a cluster this process only
    connected to, or one started elsewhere, is left running)."""
    if _STARTED_HERE[0]:
        _STARTED_HERE[0] = False
        _import_ray().shutdown()


class InProcessExecutor:
    """Runs units one after another on a worker in this process."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.pending: list[Any] = []
        self.retries = 0
        self.actors: list[Any] = []

    def submit(self, units: Sequence[Any]) -> None:
        self.pending += list(units)

    def collect(self, done: Callable[[Any, dict], None], progress: bool, desc: str) -> None:
        todo, self.pending = self.pending, []
        for u in tqdm(todo, desc=desc, disable=not progress or not todo):
            done(u, self.worker.run(u.to_dict()))

    def close(self) -> None:
        pass


class RayExecutor:
    """Ray actors, each a ``worker_cls(payload)``; a unit whose actor died is retried on a
    fresh actor. Units are handed out as actors come free (submitted ones start at once)."""

    def __init__(self, worker_cls: type, payload: dict[str, Any], execution: Execution) -> None:
        self.started = connect_cluster(execution)
        import ray

        self.ray = ray
        self.cls = ray.remote(num_cpus=execution.threads, num_gpus=execution.num_gpus)(worker_cls)
        self.payload = payload
        self.actors = [self.cls.remote(payload) for _ in range(execution.actors)]
        self.retries = 0
        self.queue: list[Any] = []
        self.running: dict[Any, tuple[Any, int]] = {}
        self.free = list(range(execution.actors))

    def call(self, method: str) -> Any:
        """``method()`` of the first actor, waited for."""
        return self.ray.get(getattr(self.actors[0], method).remote())

    def _fill(self) -> None:
        while self.queue and self.free:
            i = self.free.pop(0)
            u = self.queue.pop(0)
            self.running[self.actors[i].run.remote(u.to_dict())] = (u, i)

    def submit(self, units: Sequence[Any]) -> None:
        self.queue += list(units)
        self._fill()

    def collect(self, done: Callable[[Any, dict], None], progress: bool, desc: str) -> None:
        ray = self.ray
        bar = tqdm(total=len(self.queue) + len(self.running), desc=desc, disable=not progress)
        while self.queue or self.running:
            self._fill()
            ready, _ = ray.wait(list(self.running), num_returns=1)
            for ref in ready:
                u, i = self.running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError:
                    self.retries += 1
                    self.actors[i] = self.cls.remote(self.payload)  # a fresh actor in its place
                    self.queue.insert(0, u)
                else:
                    done(u, result)
                    bar.update(1)
                self.free.append(i)
        bar.close()

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self.started:
            release_cluster()


def open_executor(
    execution: Execution, local: Callable[[], Any], worker_cls: type, payload: dict[str, Any]
) -> InProcessExecutor | RayExecutor:
    """The executor of ``execution``: ``local()`` as the worker in-process, else Ray actors
    built from ``payload``."""
    if execution.remote:
        return RayExecutor(worker_cls, payload, execution)
    return InProcessExecutor(local())
