"""The diffusion pipeline in a child process of its own, behind the same `BatchEngine` surface.

Why: a diffusers pipeline is driven from Python, op by op, and needs the GIL between every
kernel it launches. In the process that also serves HTTP (the embedded API, the push worker),
each request handler holding the GIL makes the pipeline wait for it; measured on a 2-core
machine, one thread doing Python work 30% of the time halves the pipeline's throughput, and
changing the interpreter's switch interval does not help. A child process has its own GIL, runs
the pipeline on its main thread (where OpenMP runs it fastest) and encodes the PNGs, so the
server process keeps only request handling, the job store and the batcher. This is the
API-server / model-runner split of BentoML, TorchServe or Triton, inside one container.

The protocol over one duplex pipe (pickled tuples):

    parent → child   ("generate", call, requests) · ("stop", call) · ("close",)
    child → parent   ("ready", info) · ("step", call, done, total) · ("done", call, results)
                     ("failed", call, code, message, retryable) · ("stopped", call)
                     ("crashed", call, description)

One call runs at a time (the batcher sends one batch at a time; a lock enforces it). Step
events stream back while the child goes on: the parent's step callback (progress, cancel)
runs in the parent, and if it raises, the parent sends "stop", which the child sees at its
next step. A child that dies (killed for memory, a crashed driver) fails the call in flight
with a retryable error and is started again for the next one.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from dal.telemetry.collectors import DeviceMemory, cuda_memory
from gpu_worker.generation import (
    GeneratedImage,
    GenerationError,
    GenerationRequest,
    StepCallback,
)

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 900.0  # loading a large model from a mounted bucket can take minutes


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


class EngineProcess:
    """A `BatchEngine` whose pipeline runs in a child process (see the module docstring)."""

    def __init__(self, config: EngineConfig, *, start_timeout_s: float = _START_TIMEOUT_S) -> None:
        self._config = config
        self._start_timeout_s = start_timeout_s
        # spawn, not fork: the parent has threads (and, under tests, maybe torch) that a
        # forked child would inherit half-initialised.
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Connection | None = None
        self._info: EngineInfo | None = None
        self._calls = 0
        self._gpu_memory: list[DeviceMemory] = []
        self.restarts = 0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> EngineInfo:
        """Start the child and wait until its model is loaded (and warmed up); idempotent."""
        with self._lock:
            return self._ensure_started()

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop_child(timeout)

    @property
    def info(self) -> EngineInfo:
        return self.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

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
        with self._lock:
            self._ensure_started()
            assert self._conn is not None  # noqa: S101 - set by _ensure_started
            self._calls += 1
            call = self._calls
            try:
                self._conn.send(("generate", call, list(requests)))
                return self._await_result(self._conn, call, on_step)
            except (EOFError, OSError, BrokenPipeError) as exc:
                code = self._process.exitcode if self._process is not None else None
                self._stop_child(timeout=1.0)
                self.restarts += 1
                log.error("the pipeline process died (exit code %s); it restarts", code)
                raise GenerationError(
                    "engine_crashed",
                    f"the pipeline process stopped unexpectedly (exit code {code})",
                    retryable=True,
                ) from exc

    def _await_result(
        self, conn: Connection, call: int, on_step: StepCallback | None
    ) -> list[list[GeneratedImage]]:
        raised: BaseException | None = None
        while True:
            message = conn.recv()
            kind = message[0]
            if message[1] != call:
                continue  # a late event of an earlier, stopped call
            if kind == "step":
                if on_step is not None and raised is None:
                    try:
                        on_step(message[2], message[3])
                    except BaseException as exc:
                        # Stop the child, then wait for it to say so: the pipe must be quiet
                        # before the next call.
                        raised = exc
                        conn.send(("stop", call))
                continue
            if raised is not None and kind in ("stopped", "done", "failed", "crashed"):
                raise raised
            if kind == "done":
                results: list[list[GeneratedImage]] = message[2]
                self._gpu_memory = message[3]
                return results
            if kind == "failed":
                raise GenerationError(message[2], message[3], retryable=message[4])
            if kind == "crashed":
                raise RuntimeError(f"pipeline process: {message[2]}")
            raise RuntimeError(f"pipeline process: unexpected message {kind!r}")

    # --- the child -------------------------------------------------------------------------

    def _ensure_started(self) -> EngineInfo:
        if self._process is not None and self._process.is_alive() and self._info is not None:
            return self._info
        self._stop_child(timeout=1.0)
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=serve, args=(child_end, self._config), name="pipeline", daemon=True
        )
        started = time.monotonic()
        process.start()
        child_end.close()
        self._process, self._conn = process, parent_end
        try:
            if not parent_end.poll(self._start_timeout_s):
                raise GenerationError(
                    "engine_unavailable",
                    f"the pipeline process was not ready within {self._start_timeout_s:.0f} s",
                    retryable=True,
                )
            message = parent_end.recv()
        except (EOFError, OSError) as exc:
            self._stop_child(timeout=1.0)
            raise GenerationError(
                "engine_unavailable",
                f"the pipeline process exited while starting (exit code {process.exitcode})",
                retryable=True,
            ) from exc
        except BaseException:
            self._stop_child(timeout=1.0)
            raise
        if message[0] != "ready":
            self._stop_child(timeout=1.0)
            raise GenerationError("engine_unavailable", str(message[-1]), retryable=False)
        self._info = message[1]
        log.info(
            "pipeline process %d ready in %.2f s (model %s on %s)",
            process.pid,
            time.monotonic() - started,
            self._info.model_id,
            self._info.device,
        )
        return self._info

    def _stop_child(self, timeout: float) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = self._info = None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("close",))
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(timeout)
        if conn is not None:
            conn.close()


def serve(conn: Connection, config: EngineConfig) -> None:
    """The child's main: load the model, say ready, then run calls until told to close."""
    _configure_child_logging(config)
    if config.cpus:
        # Before torch starts its thread pool, which inherits this.
        os.sched_setaffinity(0, config.cpus)
    try:
        engine = _load(config)
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
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return  # the parent is gone
        if message[0] == "close":
            return
        if message[0] == "generate":
            _run_call(conn, engine, message[1], message[2])
        # A "stop" for a call that already ended needs nothing.


def _run_call(conn: Connection, engine: Any, call: int, requests: list[GenerationRequest]) -> None:
    from gpu_worker.engine import DiffusionEngine

    assert isinstance(engine, DiffusionEngine)  # noqa: S101 - narrows the type for mypy

    def on_step(done: int, total: int) -> None:
        while conn.poll():
            message = conn.recv()
            if message[0] in ("stop", "close") and (message[0] == "close" or message[1] == call):
                raise _Stopped
        conn.send(("step", call, done, total))

    try:
        results = engine.generate_batch(requests, on_step=on_step)
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
    conn.send(("done", call, results, _gpu_memory()))


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


def _load(config: EngineConfig) -> Any:
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
