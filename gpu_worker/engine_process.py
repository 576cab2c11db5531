"""The diffusion pipeline in a child process of its own, behind the same `BatchEngine` surface.

Why: a diffusers pipeline is driven from Python, op by op, and needs the GIL between every
kernel it launches. In the process that also serves HTTP (the embedded API, the push worker),
each request handler holding the GIL makes the pipeline wait for it; measured on a 2-core
machine, one thread doing Python work 30% of the time halves the pipeline's throughput, and
changing the interpreter's switch interval does not help. A child process has its own GIL and
runs the pipeline on its main thread (where OpenMP runs it fastest), so the server process
keeps only request handling, the job store, the batcher and PNG encoding. This is the
API-server / model-runner split of BentoML, TorchServe or Triton, inside one container.

The protocol over one duplex pipe (pickled tuples):

    parent → child   ("generate", call, requests) · ("stop", call) · ("close",)
    child → parent   ("ready", info) · ("step", call, done, total)
                     ("done", call, raw images, GPU memory) · ("stopped", call)
                     ("failed", call, code, message, retryable) · ("crashed", call, description)

Calls run one after the other in the child; up to two may be outstanding (`max_in_flight`), so
the next batch waits in the child while the current one finishes, and the parent encodes one
batch's PNGs while the child runs the next. Step events stream back while the child goes on,
at most one every `STEP_REPORT_INTERVAL_S` and the last step always: the parent's step
callback (progress, cancel) runs in the parent, and if it raises, the parent sends "stop",
which the child sees at its next step, reported or not. A child that dies (killed for memory, a
crashed driver) fails the calls in flight with a retryable error and is started again for the
next one.

Readiness (`check_ready`, behind the worker's /readyz) follows what happened to the child
lately (`ChildHealth`): not ready while the last attempt to start one failed, or once children
keep dying (3 deaths within 5 minutes by default); a child that died once and is started again
by the next call does not, alone, make the worker unready.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dal.errors import GenerationError, GeneratorUnavailable
from dal.records import GeneratedImage, GenerationRequest, StepCallback
from dal.telemetry.collectors import DeviceMemory, cuda_memory
from gpu_worker.images import from_raw, split_by_request, to_raw

if TYPE_CHECKING:  # the serving process never imports torch
    from gpu_worker.engine import DiffusionEngine

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 900.0  # loading a large model from a mounted bucket can take minutes
# A child that dies this often is crash-looping (a driver fault, a model too large for the
# card): take the worker out of rotation rather than fail job after job. One death now and then
# (a poisoned job, the OOM killer) is survived by starting another child.
_CRASH_LIMIT = 3
_CRASH_WINDOW_S = 300.0
# Each step event wakes two threads of the serving process (the pipe's reader, then the call's
# lane), about 0.1 ms of its CPU, while what it drives acts at most every 0.25 s (the cancel
# check) and 0.5 s (the progress write, gpu_worker/progress.py). A step at least this long after
# the last one reported is reported; the last step always is (the batcher forms the next batch
# on it). A fast GPU's 20 ms steps then cost one event in five.
STEP_REPORT_INTERVAL_S = 0.1


@dataclass(frozen=True)
class EngineConfig:
    """What the child needs to build its `DiffusionEngine` (picklable, no settings object:
    the child must not depend on how the parent was configured)."""

    model_path: Path
    model_id: str | None = None
    device: str | None = None
    compile_unet: bool = False
    vae_slicing_min_batch: int = 4
    warm_up: bool = True
    torch_threads: int = 0  # 0: see pipeline_threads()
    cpus: tuple[int, ...] | None = None  # pin the child to these (PIPELINE_CPUS)
    log_level: str = "info"
    log_format: str = "text"
    gcp_project: str = "local-project"


@dataclass(frozen=True)
class EngineInfo:
    model_id: str
    default_size: tuple[int, int]
    device: str
    load_seconds: float
    warm_up_seconds: float
    pid: int


class _Stopped(Exception):
    """The parent asked the child to stop the running call."""


class _Child:
    """One incarnation of the child process: its pipe, and a reader thread that routes each
    message to the call it belongs to."""

    def __init__(self, process: Any, conn: Connection, info: EngineInfo) -> None:
        self.process = process
        self.conn = conn
        self.info = info
        self._send_lock = threading.Lock()
        self._calls: dict[int, queue.SimpleQueue[tuple[Any, ...]]] = {}
        self._calls_lock = threading.Lock()
        self.dead = False
        self._reader = threading.Thread(target=self._read, name="pipeline-reader", daemon=True)
        self._reader.start()

    def open_call(self, call: int) -> queue.SimpleQueue[tuple[Any, ...]]:
        inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        with self._calls_lock:
            if self.dead:
                raise EOFError("the pipeline process is gone")
            self._calls[call] = inbox
        return inbox

    def close_call(self, call: int) -> None:
        with self._calls_lock:
            self._calls.pop(call, None)

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(message)

    def _read(self) -> None:
        try:
            while True:
                message = self.conn.recv()
                with self._calls_lock:
                    inbox = self._calls.get(message[1])
                if inbox is not None:
                    inbox.put(message)
        except (EOFError, OSError):
            pass
        with self._calls_lock:
            self.dead = True
            waiting = list(self._calls.values())
        for inbox in waiting:
            inbox.put(("dead", None))

    def stop(self, timeout: float) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send(("close",))
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)
        self.conn.close()
        self._reader.join(timeout)


def _exit_code(child: _Child) -> int | None:
    code = child.process.exitcode
    return int(code) if code is not None else None


class ChildHealth:
    """What happened to the pipeline process lately, told by the `EngineProcess` as it
    happens, and whether that leaves it able to take work. Reads take a lock held only for
    bookkeeping, never while a child starts, so a readiness probe never waits for one."""

    def __init__(
        self,
        *,
        crash_limit: int = _CRASH_LIMIT,
        crash_window_s: float = _CRASH_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if crash_limit < 1:
            raise ValueError("crash_limit must be at least 1")
        self._crash_window_s = crash_window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._crashes: deque[float] = deque(maxlen=crash_limit)  # when the last ones died
        self._started = False
        self._start_failure: tuple[float, str] | None = None  # when, and why
        self._closed = False

    def record_start(self) -> None:
        with self._lock:
            self._started = True
            self._start_failure = None

    def record_start_failure(self, reason: str) -> None:
        with self._lock:
            self._start_failure = (self._clock(), reason)

    def record_crash(self) -> None:
        with self._lock:
            self._crashes.append(self._clock())

    def record_close(self) -> None:
        with self._lock:
            self._closed = True

    def check(self) -> None:
        """Raises GeneratorUnavailable, saying why, unless the child can take work."""
        with self._lock:
            now = self._clock()
            if self._closed:
                raise GeneratorUnavailable("the pipeline process was stopped")
            if self._start_failure is not None:
                failed_at, reason = self._start_failure
                raise GeneratorUnavailable(
                    f"the pipeline process failed to start {now - failed_at:.0f} s ago: {reason}"
                )
            if not self._started:
                raise GeneratorUnavailable("the pipeline process has not started yet")
            crashes = self._crashes
            if len(crashes) == crashes.maxlen and now - crashes[0] < self._crash_window_s:
                times = "once" if len(crashes) == 1 else f"{len(crashes)} times"
                raise GeneratorUnavailable(
                    f"the pipeline process crashed {times} in the last "
                    f"{_duration(self._crash_window_s)}"
                )


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return "minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds:g} s"


class EngineProcess:
    """A `BatchEngine` whose pipeline runs in a child process (see the module docstring).

    Up to `max_in_flight` calls may be outstanding: the child runs them one after the other,
    so the batcher can hand over the next batch while the current one finishes and the
    child never waits for the parent between batches."""

    max_in_flight = 2

    def __init__(
        self,
        config: EngineConfig,
        *,
        start_timeout_s: float = _START_TIMEOUT_S,
        crash_limit: int = _CRASH_LIMIT,
        crash_window_s: float = _CRASH_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._start_timeout_s = start_timeout_s
        self._health = ChildHealth(
            crash_limit=crash_limit, crash_window_s=crash_window_s, clock=clock
        )
        self._closed = False
        # spawn, not fork: the parent has threads (and, under tests, maybe torch) that a
        # forked child would inherit half-initialised.
        self._context = multiprocessing.get_context("spawn")
        self._lifecycle = threading.Lock()
        self._child: _Child | None = None
        self._info: EngineInfo | None = None  # what the last child to start said
        self._ids = itertools.count(1)
        self._gpu_memory: list[DeviceMemory] = []
        self.restarts = 0  # children that died unexpectedly (each one is replaced)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> EngineInfo:
        """Start the child and wait until its model is loaded (and warmed up); idempotent."""
        return self._running_child().info

    def check_ready(self) -> None:
        """Raises GeneratorUnavailable when the last attempt to start the child failed, when
        children keep crashing, before the first start and after close(); see ChildHealth.
        Starts nothing and does not touch the pipe."""
        self._health.check()

    def close(self, timeout: float = 10.0) -> None:
        self._health.record_close()
        with self._lifecycle:
            self._closed = True
            child, self._child = self._child, None
        if child is not None:
            child.stop(timeout)

    @property
    def info(self) -> EngineInfo:
        """What the last child said when it started (its model does not change from one to
        the next); starts the first one if none has started yet."""
        return self._info if self._info is not None else self.start()

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.process.pid if child is not None else None

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def default_size(self) -> tuple[int, int]:
        return self.info.default_size

    @property
    def device(self) -> str:
        return self.info.device

    def gpu_memory(self) -> list[DeviceMemory]:
        """CUDA memory per device as the child reported it after its last call."""
        return list(self._gpu_memory)

    @property
    def load_seconds(self) -> float:
        return self.info.load_seconds

    @property
    def warm_up_seconds(self) -> float:
        return self.info.warm_up_seconds

    # --- generation ------------------------------------------------------------------------

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None
    ) -> list[GeneratedImage]:
        return self.generate_batch([request], on_step=on_step)[0]

    def generate_batch(
        self, requests: Sequence[GenerationRequest], on_step: StepCallback | None = None
    ) -> list[list[GeneratedImage]]:
        if not requests:
            return []
        child = self._running_child()
        call = next(self._ids)
        try:
            inbox = child.open_call(call)
            try:
                child.send(("generate", call, list(requests)))
                return self._await_result(child, inbox, call, requests, on_step)
            finally:
                child.close_call(call)
        except (EOFError, OSError) as exc:
            code = self._bury(child)
            raise GenerationError(
                "engine_crashed",
                f"the pipeline process stopped unexpectedly (exit code {code})",
                retryable=True,
            ) from exc

    def _await_result(
        self,
        child: _Child,
        inbox: queue.SimpleQueue[tuple[Any, ...]],
        call: int,
        requests: Sequence[GenerationRequest],
        on_step: StepCallback | None,
    ) -> list[list[GeneratedImage]]:
        raised: BaseException | None = None
        while True:
            message = inbox.get()
            kind = message[0]
            if kind == "dead":
                raise EOFError("the pipeline process is gone")
            if kind == "step":
                if on_step is not None and raised is None:
                    try:
                        on_step(message[2], message[3])
                    except BaseException as exc:
                        # Stop the call, then wait for the child to say so, so that the
                        # call's last messages do not outlive it.
                        raised = exc
                        child.send(("stop", call))
                continue
            if raised is not None:
                raise raised
            if kind == "done":
                self._gpu_memory = message[3]
                return split_by_request(requests, [from_raw(raw) for raw in message[2]])
            if kind == "failed":
                raise GenerationError(message[2], message[3], retryable=message[4])
            if kind == "crashed":
                raise RuntimeError(f"pipeline process: {message[2]}")
            raise RuntimeError(f"pipeline process: unexpected message {kind!r}")

    # --- the child -------------------------------------------------------------------------

    def _running_child(self) -> _Child:
        with self._lifecycle:
            if self._closed:
                raise GenerationError(
                    "shutting_down", "the pipeline process was stopped", retryable=True
                )
            child = self._child
            if child is not None and not child.dead and child.process.is_alive():
                return child
            if child is not None:
                # It died idle, or under a call that has not buried it yet.
                self._child = None
                self._record_crash()
                child.stop(timeout=1.0)
            try:
                self._child = self._spawn()
            except Exception as exc:
                self._health.record_start_failure(_describe(exc))
                raise
            self._health.record_start()
            self._info = self._child.info
            return self._child

    def _bury(self, child: _Child) -> int | None:
        """A child died under a call: forget it (once), so the next call starts another."""
        with self._lifecycle:
            if self._child is not child:
                # Already replaced (and counted) by another call, or stopped by close().
                return _exit_code(child)
            self._child = None
            self._record_crash()
        child.stop(timeout=1.0)
        code = _exit_code(child)
        log.error("the pipeline process died (exit code %s); the next call starts another", code)
        return code

    def _spawn(self) -> _Child:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=serve, args=(child_end, self._config), name="pipeline", daemon=True
        )
        started = time.monotonic()
        process.start()
        child_end.close()

        def abandon() -> None:
            if process.is_alive():
                process.kill()
            process.join(5)
            parent_end.close()

        try:
            if not parent_end.poll(self._start_timeout_s):
                raise GenerationError(
                    "engine_unavailable",
                    f"the pipeline process was not ready within {self._start_timeout_s:.0f} s",
                    retryable=True,
                )
            message = parent_end.recv()
        except (EOFError, OSError) as exc:
            abandon()
            raise GenerationError(
                "engine_unavailable",
                f"the pipeline process exited while starting (exit code {process.exitcode})",
                retryable=True,
            ) from exc
        except BaseException:
            abandon()
            raise
        if message[0] != "ready":
            abandon()
            raise GenerationError("engine_unavailable", str(message[-1]), retryable=False)
        info: EngineInfo = message[1]
        log.info(
            "pipeline process %d ready in %.2f s (model %s on %s)",
            process.pid,
            time.monotonic() - started,
            info.model_id,
            info.device,
        )
        return _Child(process, parent_end, info)

    def _record_crash(self) -> None:
        self.restarts += 1
        self._health.record_crash()


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, GenerationError) else f"{type(exc).__name__}: {exc}"


def serve(conn: Connection, config: EngineConfig) -> None:
    """The child's main: load the model, say ready, then run calls until told to close."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when this
    # process stops (a "close", or the pipe closing when the parent exits).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _configure_child_logging(config)
    _keep_progress_bars_in_process()
    if config.cpus:
        # Before torch starts its thread pool, which inherits this.
        os.sched_setaffinity(0, config.cpus)
    try:
        engine = load_engine(config)
    except BaseException as exc:
        log.exception("the pipeline process could not load the model")
        conn.send(("failed", 0, "model_load_failed", f"{type(exc).__name__}: {exc}", False))
        return
    conn.send(
        (
            "ready",
            EngineInfo(
                model_id=engine.model_id,
                default_size=engine.default_size,
                device=engine.device,
                load_seconds=engine.load_seconds,
                warm_up_seconds=engine.warm_up_seconds,
                pid=os.getpid(),
            ),
        )
    )
    backlog: deque[tuple[Any, ...]] = deque()  # calls sent while another one ran
    while True:
        if backlog:
            message = backlog.popleft()
        else:
            try:
                message = conn.recv()
            except EOFError:
                return  # the parent is gone
        if message[0] == "close":
            return
        if message[0] == "generate":
            _run_call(conn, engine, message[1], message[2], backlog)
        # A "stop" for a call that already ended needs nothing.


def _run_call(
    conn: Connection,
    engine: DiffusionEngine,
    call: int,
    requests: list[GenerationRequest],
    backlog: deque[tuple[Any, ...]],
) -> None:
    last_report = time.monotonic()

    def on_step(done: int, total: int) -> None:
        nonlocal last_report
        # Between steps: take in what the parent sent meanwhile.
        while conn.poll():
            message = conn.recv()
            if message[0] == "generate":
                backlog.append(message)
            elif message[0] == "close":
                backlog.appendleft(message)
                raise _Stopped
            elif message[0] == "stop" and message[1] == call:
                raise _Stopped
        now = time.monotonic()
        if done < total and now - last_report < STEP_REPORT_INTERVAL_S:
            return
        last_report = now
        conn.send(("step", call, done, total))

    try:
        # Raw pixels, not PNGs: the serving process encodes them while this process already
        # runs the next batch.
        images = [to_raw(image) for image in engine.run_pipeline(requests, on_step=on_step)]
    except _Stopped:
        conn.send(("stopped", call))
        return
    except GenerationError as exc:
        conn.send(("failed", call, exc.code, exc.message, exc.retryable))
        return
    except Exception as exc:
        log.exception("pipeline call failed")
        conn.send(("crashed", call, f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("done", call, images, _gpu_memory()))


def pipeline_threads(requested: int, device: str, *, pinned: bool = False) -> int | None:
    """Intra-op threads for the pipeline: `requested` when set; on a CPU, one per core it may
    use, but one fewer when it is not pinned apart (PIPELINE_CPUS), so that request handling
    keeps a core (on two cores one thread also measured faster than two); on a GPU, torch's
    default (None)."""
    if requested > 0:
        return requested
    if device.startswith("cuda"):
        return None
    cores = len(os.sched_getaffinity(0))
    return cores if pinned else max(1, cores - 1)


def _gpu_memory() -> list[DeviceMemory]:
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    return cuda_memory(torch.cuda)


def load_engine(config: EngineConfig) -> DiffusionEngine:
    """The engine `config` describes, loaded (and warmed up): in the pipeline process, or in
    this one when PIPELINE_PROCESS is off."""
    import torch

    from gpu_worker.engine import DiffusionEngine

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = pipeline_threads(config.torch_threads, device, pinned=bool(config.cpus))
    if threads is not None:
        torch.set_num_threads(threads)
    engine = DiffusionEngine(
        config.model_path,
        model_id=config.model_id,
        device=device,
        compile_unet=config.compile_unet,
        vae_slicing_min_batch=config.vae_slicing_min_batch,
    )
    engine.load()
    if config.warm_up:
        engine.warm_up()
    return engine


def _keep_progress_bars_in_process() -> None:
    """diffusers makes a tqdm bar on every call, a disabled one included, and tqdm's first bar
    creates a multiprocessing lock: in this spawned process, a named semaphore registered with
    the parent's resource tracker, which reports it as leaked whenever this process is killed
    (and starts a monitor thread besides). No bar here is shared with another process: a
    thread lock, and no monitor."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    tqdm.monitor_interval = 0


def _configure_child_logging(config: EngineConfig) -> None:
    from dal.settings import Settings
    from dal.telemetry.logging_setup import configure_logging

    # Only the logging fields matter here; the rest are the defaults of a local profile.
    settings = Settings(
        app_env="local",
        log_level=config.log_level,
        log_format=config.log_format,
        gcp_project=config.gcp_project,
    )
    configure_logging(settings)
