"""The models lm_api serves: one engine per loaded model, loaded on first use.

A request asks the registry for its model (`acquire`) and holds the lease it gets until
its answer ends. The registry loads a model that is not loaded; when `LM_API_MAX_LOADED`
models are loaded already it unloads the least recently used one that is idle (no lease,
nobody waiting for it) and waits while none is. Meanwhile the request waits in line (it
counts in the queue depth, up to `LM_API_MAX_QUEUE`), it is not refused. Only while lm_api
starts (no model was ever ready, /health answers 503) is a request refused with 503 and
Retry-After instead. A model that failed to load answers its reason until its file
changes.

Everything here runs on the event loop; engines report from their worker threads through
`call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from lm_api.config import Settings
from lm_api.engines.base import Engine, EngineStatus, Loader, NotReady, QueueFull
from lm_api.metrics import Metrics
from lm_api.model_files import ModelFile, Stamp, default_file, scan

log = logging.getLogger("lm_api")

ModelState = Literal["unloaded", "loading", "ready", "failed"]
MakeEngine = Callable[[Settings, Metrics, Loader], Engine]


class UnknownModel(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"The model '{name}' does not exist")
        self.name = name


@dataclass
class _Loaded:
    file: ModelFile
    engine: Engine
    leases: int = 0
    last_used: int = 0


@dataclass(frozen=True)
class _Failure:
    stamp: Stamp
    detail: str


@dataclass(frozen=True)
class Health:
    ok: bool
    state: Literal["ok", "loading", "failed"]
    detail: str
    model: str  # the default model
    loaded: list[str]
    queue_depth: int
    running: int


@dataclass
class Lease:
    """A request's hold on a loaded model: it is not unloaded while held."""

    name: str
    engine: Engine
    _registry: ModelRegistry = field(repr=False)
    _released: bool = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._registry._release(self.name)


class ModelRegistry:
    def __init__(
        self, settings: Settings, metrics: Metrics, loader: Loader, make_engine: MakeEngine
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._loader = loader
        self._make_engine = make_engine
        self._loaded: dict[str, _Loaded] = {}
        self._failures: dict[str, _Failure] = {}
        self._wanted: collections.Counter[str] = collections.Counter()  # waiters per model
        self._waiting = 0  # requests waiting for a model to load or for room to load it
        self._unloading = 0
        self._uses = 0  # a clock for "least recently used"
        self._ever_ready = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        metrics.queue_depth.set_function(self.queue_depth)

    # lifecycle

    def start(self) -> None:
        """Begin loading the default model (the server answers meanwhile)."""
        self._loop = asyncio.get_running_loop()
        self._load(default_file(self._settings))

    async def close(self) -> None:
        engines = [entry.engine for entry in self._loaded.values()]
        self._loaded.clear()
        for engine in engines:
            await asyncio.to_thread(engine.close)

    # what there is

    def files(self) -> list[ModelFile]:
        return scan(self._settings)

    def resolve(self, name: str | None) -> ModelFile:
        """The model a request names (none: the default); raises UnknownModel."""
        default = default_file(self._settings)
        if name is None or name == default.name:
            return default
        if name in self._loaded:
            return self._loaded[name].file
        for file in self.files():
            if name == file.name:
                return file
        if name == default.path.stem:  # the default's file name works as well as its alias
            return default
        raise UnknownModel(name)

    def state(self, file: ModelFile) -> ModelState:
        entry = self._loaded.get(file.name)
        if entry is not None:
            return "ready" if entry.engine.status().state == "ready" else "loading"
        return "failed" if self._failed(file) else "unloaded"

    def queue_depth(self) -> int:
        return self._waiting + sum(e.engine.waiting for e in list(self._loaded.values()))

    def health(self) -> Health:
        statuses = [e.engine.status() for e in self._loaded.values()]
        ready = [s for s in statuses if s.state == "ready"]
        default = default_file(self._settings)
        state: Literal["ok", "loading", "failed"]
        if ready or (statuses and self._ever_ready):  # serving, or swapping models
            state, detail = "ok", "ready" if ready else "loading a model"
        elif statuses:
            state, detail = "loading", statuses[0].detail
        elif any(not self._failed(f) for f in self.files()):
            state, detail = "ok", "models load on first use"
        else:
            failure = self._failures.get(default.name)
            state = "failed"
            detail = failure.detail if failure else f"no model in {self._settings.models_directory}"
        return Health(
            ok=state == "ok",
            state=state,
            detail=detail,
            model=default.name,
            loaded=[s.model for s in ready],
            queue_depth=self.queue_depth(),
            running=sum(s.running for s in statuses),
        )

    def _failed(self, file: ModelFile) -> bool:
        failure = self._failures.get(file.name)
        return failure is not None and failure.stamp == file.stamp()

    # leases

    async def acquire(self, name: str | None) -> Lease:
        """A lease on the model, loaded (raises UnknownModel, NotReady, QueueFull)."""
        file = self.resolve(name)
        self._wanted[file.name] += 1
        waiting = False
        try:
            while True:
                entry = self._loaded.get(file.name)
                if entry is not None:
                    st = entry.engine.status()
                    if st.state == "ready":
                        entry.leases += 1
                        self._touch(entry)
                        return Lease(file.name, entry.engine, self)
                    if st.state == "failed" or not self._ever_ready:
                        # Failed, or lm_api is starting: /health says so, come back later.
                        raise NotReady(st.detail)
                elif self._failed(file):
                    raise NotReady(self._failures[file.name].detail)
                elif len(self._loaded) + self._unloading < self._settings.max_loaded:
                    self._load(file)
                    continue
                elif (victim := self._idle_lru()) is not None:
                    await self._unload(victim)
                    continue
                if not waiting:
                    if self._waiting >= self._settings.max_queue:
                        raise QueueFull(f"{self._waiting} requests are waiting already")
                    waiting = True
                    self._waiting += 1
                await self._changed.wait()
        finally:
            self._wanted[file.name] -= 1
            if waiting:
                self._waiting -= 1

    def _release(self, name: str) -> None:
        entry = self._loaded.get(name)
        if entry is not None:
            entry.leases -= 1
            self._touch(entry)
        self._notify()

    def _touch(self, entry: _Loaded) -> None:
        self._uses += 1
        entry.last_used = self._uses

    def _idle_lru(self) -> _Loaded | None:
        idle = [
            e
            for e in self._loaded.values()
            if e.leases == 0
            and self._wanted[e.file.name] == 0
            and e.engine.status().state == "ready"
        ]
        return min(idle, key=lambda e: e.last_used, default=None)

    # loading and unloading

    def _load(self, file: ModelFile) -> None:
        self._failures.pop(file.name, None)
        settings = self._settings.for_model(file.path, file.name)
        engine = self._make_engine(settings, self._metrics, self._loader)
        entry = _Loaded(file, engine)
        self._touch(entry)
        loop = self._loop
        assert loop is not None, "start() first"

        def settled() -> None:  # from the engine's worker thread
            loop.call_soon_threadsafe(self._settled, entry, file.stamp())

        engine.on_settled = settled
        self._loaded[file.name] = entry
        log.info("lm_api: loading model %s (%s)", file.name, file.path)
        engine.start()

    def _settled(self, entry: _Loaded, stamp: Stamp) -> None:
        st: EngineStatus = entry.engine.status()
        if st.state == "ready":
            self._ever_ready = True
        elif self._loaded.get(entry.file.name) is entry:
            # A failed load holds no memory: it leaves the loaded set, its reason stays.
            del self._loaded[entry.file.name]
            self._failures[entry.file.name] = _Failure(stamp, st.detail)
        self._notify()

    async def _unload(self, entry: _Loaded) -> None:
        del self._loaded[entry.file.name]
        self._unloading += 1
        log.info("lm_api: unloading model %s (least recently used, idle)", entry.file.name)
        try:
            await asyncio.to_thread(entry.engine.close)
            # llama-cpp-python's Llama sits in reference cycles (its tokenizer points back
            # at it): collect now, so its buffers go with the model rather than later.
            await asyncio.to_thread(gc.collect)
        finally:
            self._unloading -= 1
            self._notify()

    def _notify(self) -> None:
        # Wake every waiter; each checks again what it waits for.
        self._changed.set()
        self._changed = asyncio.Event()
