"""The task generators registered under `lgdram.datasets`: mnist, translated, cmnist, mcmnist.

A generator is a class with a `Config` (pydantic, strict) and a `generate(n, split, seed)`
that returns a `CanvasBatch`. Plugins subclass `DatasetGenerator` the same way.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Optional

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from lgdram_cli import PLUGIN_API_VERSION
from lgdram_cli.data.canvas import DIGIT, CanvasBatch, compose, digit_boxes
from lgdram_cli.data.sources import DigitSet, load_digits
from lgdram_cli.registry import own_description, plugin_description
from lgdram_cli.specs import StrictModel

#: Canvases are composed in chunks of this many, each from its own seeded generator, so a
#: dataset's bytes depend only on (spec, seed, index) and chunks stay cache-sized (fast).
CHUNK = 256


def chunk_generator(seed: int, chunk: int, stream: int = 0) -> torch.Generator:
    """An independent, reproducible random stream (a CPU `torch.Generator`) for chunk `chunk`
    (canvases chunk·CHUNK … chunk·CHUNK + CHUNK − 1) of a dataset seeded `seed`.

    Draw everything about a chunk's canvases from it, for the whole chunk, then slice: item i
    then depends only on (seed, i), whichever `start` and `n` it is asked for with. `stream`
    picks another independent stream for the same chunk: lgdram's own canvases use stream 0,
    so a task that adds its own randomness on top of them uses 1, 2, …"""
    entropy = [seed & 0xFFFFFFFF, chunk] + ([stream] if stream else [])
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def chunks(start: int, n: int) -> list[tuple[int, int, int]]:
    """The chunks that items start … start + n − 1 span: (chunk, lo, hi) with items lo … hi − 1
    of that chunk wanted (they go to positions chunk·CHUNK + lo − start … of the output)."""
    return [
        (chunk, max(start - chunk * CHUNK, 0), min(start + n - chunk * CHUNK, CHUNK))
        for chunk in range(start // CHUNK, (start + n - 1) // CHUNK + 1)
    ] if n > 0 else []


class DatasetConfig(StrictModel):
    """Base of every dataset config: `type` names the registry entry."""

    type: str


class DatasetGenerator:
    """Plugin contract for a task generator (entry-point group `lgdram.datasets`).

    Subclasses set `Config` and implement `generate`, `channels`, `size` and `classes`.
    `generate` must be deterministic for a given (config, split, seed) on CPU, and item i of
    the stream must not depend on how the stream is sliced (`start`, `n`).
    """

    plugin_api_version: ClassVar[int] = PLUGIN_API_VERSION
    Config: ClassVar[type[DatasetConfig]] = DatasetConfig
    #: one line for `lgdram plugins`; default: the first line of the class's own docstring
    description: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own_description(cls)

    def __init__(self, config: DatasetConfig) -> None:
        self.config = config

    @property
    def channels(self) -> int:
        raise NotImplementedError

    @property
    def size(self) -> tuple[int, int]:
        """Canvas (height, width) in pixels."""
        raise NotImplementedError

    @property
    def classes(self) -> int:
        raise NotImplementedError

    def generate(
        self, n: int, split: str, seed: int, device: torch.device | str = "cpu", start: int = 0
    ) -> CanvasBatch:
        """Items `start … start+n` of the sample stream of `split` seeded `seed`."""
        raise NotImplementedError

    def resolved_config(self) -> dict[str, Any]:
        """The config as actually used (e.g. after a digit-source fallback), as plain data."""
        return self.config.model_dump(mode="json")

    def provenance(self, split: str) -> dict[str, str]:
        """Checksums that identify the underlying data of `split` (stored with outputs)."""
        return {}


def _parse_pair(value: Any, what: str, sep: str) -> Any:
    """'N' / N → (N, N); 'AxB' / 'A-B' / [A, B] → (A, B); anything else is left to pydantic."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, not a boolean")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return tuple(value)
    if isinstance(value, str):
        m = re.fullmatch(rf"\s*(-?\d+)\s*(?:{sep}\s*(-?\d+)\s*)?", value)
        if m:
            a = int(m.group(1))
            return (a, int(m.group(2)) if m.group(2) is not None else a)
    return value


class CanvasConfig(DatasetConfig):
    """Parameters shared by the digit-canvas tasks."""

    canvas: tuple[int, int] = Field((60, 60), description="canvas size: S or HxW (pixels)")
    distractors: tuple[int, int] = Field((0, 0), description="distractor count: N or lo-hi (inclusive)")
    distractor_size: int = Field(8, ge=1, le=DIGIT, description="side of a distractor patch (pixels)")
    colour: bool = Field(False, description="random RGB colour for the digit and each distractor")
    digits: str = Field("mnist", description="digit source: mnist, mnist-mini, fashion-mnist or idx:DIR")
    test_digits: Optional[str] = Field(
        None, description="digit source of the test split (default: digits), e.g. idx:DIR of MNIST's t10k files"
    )

    def source(self, split: str) -> str:
        """The digit source `split` draws from (targets and distractors alike)."""
        return self.test_digits if split == "test" and self.test_digits else self.digits

    @field_validator("canvas", mode="before")
    @classmethod
    def _canvas(cls, v: Any) -> Any:
        return _parse_pair(v, "canvas", "x")

    @field_validator("distractors", mode="before")
    @classmethod
    def _distractors(cls, v: Any) -> Any:
        return _parse_pair(v, "distractors", "-")

    @model_validator(mode="after")
    def _check(self) -> CanvasConfig:
        h, w = self.canvas
        if h < DIGIT or w < DIGIT:
            raise ValueError(f"canvas {h}x{w} is smaller than a {DIGIT}x{DIGIT} digit; use at least {DIGIT}")
        lo, hi = self.distractors
        if lo < 0 or hi < 0:
            raise ValueError(f"distractors {lo}-{hi}: counts cannot be negative")
        if lo > hi:
            raise ValueError(f"distractors {lo}-{hi}: the lower bound exceeds the upper; write {hi}-{lo}")
        if self.distractor_size > min(h, w):
            raise ValueError(f"distractor_size {self.distractor_size} does not fit the {h}x{w} canvas")
        return self


class CanvasTask(DatasetGenerator):
    """Shared implementation of the digit-canvas tasks (one target digit + distractors)."""

    Config: ClassVar[type[CanvasConfig]] = CanvasConfig
    config: CanvasConfig

    def __init__(self, config: CanvasConfig) -> None:
        super().__init__(config)
        self._splits: dict[str, tuple[DigitSet, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._on_device: dict[tuple[str, torch.device], tuple[torch.Tensor, ...]] = {}
        # The last partly used chunk: training asks for 32 canvases a step, so 8 steps in a row
        # slice the same 256-canvas chunk; compose it once, not eight times.
        self._last_chunk: tuple[tuple[str, int, int, torch.device], CanvasBatch] | None = None

    @property
    def channels(self) -> int:
        return 3 if self.config.colour else 1

    @property
    def size(self) -> tuple[int, int]:
        return self.config.canvas

    @property
    def classes(self) -> int:
        return 10

    def digits(self, split: str) -> DigitSet:
        return self._prepared(split)[0]

    def _prepared(self, split: str) -> tuple[DigitSet, torch.Tensor, torch.Tensor, torch.Tensor]:
        if split not in self._splits:
            ds = load_digits(self.config.source(split), split)
            images = torch.from_numpy(np.ascontiguousarray(ds.images))
            self._splits[split] = (ds, images, torch.from_numpy(ds.labels), digit_boxes(images))
        return self._splits[split]

    def generate(
        self, n: int, split: str, seed: int, device: torch.device | str = "cpu", start: int = 0
    ) -> CanvasBatch:
        device = torch.device(device)
        if (split, device) not in self._on_device:  # digits copied to the device once, not per call
            self._on_device[(split, device)] = tuple(t.to(device) for t in self._prepared(split)[1:])
        on_device = self._on_device[(split, device)]
        C, (H, W) = self.channels, self.size
        images = torch.empty((n, C, H, W), dtype=torch.uint8, device=device)
        workspace: torch.Tensor | None = None  # made on first use: a cached chunk needs none
        parts = []
        for chunk in range(start // CHUNK, (start + n - 1) // CHUNK + 1):
            lo = max(start - chunk * CHUNK, 0)  # the part of this chunk that is wanted
            hi = min(start + n - chunk * CHUNK, CHUNK)
            at = chunk * CHUNK + lo - start  # where that part goes in the output
            whole = lo == 0 and hi == CHUNK
            key = (split, seed, chunk, device)
            if not whole and self._last_chunk is not None and self._last_chunk[0] == key:
                batch = self._last_chunk[1]
            else:
                if workspace is None:
                    workspace = torch.empty(CHUNK * C * H * W, dtype=torch.int16, device=device)
                batch = compose(
                    *on_device,
                    CHUNK,
                    self.config.canvas,
                    self.config.distractors,
                    self.config.distractor_size,
                    self.config.colour,
                    chunk_generator(seed, chunk),
                    device,
                    out=images[at : at + CHUNK] if whole else None,
                    workspace=workspace,
                )
            if not whole:
                self._last_chunk = (key, batch)
                images[at : at + hi - lo] = batch.images[lo:hi]
            parts.append([t[lo:hi] for t in batch.tensors()[1:]])
        labels, centers, boxes, count = (torch.cat(ts) for ts in zip(*parts))
        return CanvasBatch(images, labels, centers, boxes, count)

    def resolved_config(self) -> dict[str, Any]:
        out = super().resolved_config()
        for split, (ds, *_) in self._splits.items():  # the sources really used (e.g. a fallback)
            out["test_digits" if split == "test" and self.config.test_digits else "digits"] = ds.source
        return out

    @property
    def train_size(self) -> int:
        """Distinct training digits: the size of the training set a fixed annotation pool is
        measured against (`annotation_pool`)."""
        return len(self.digits("train").labels)

    def provenance(self, split: str) -> dict[str, str]:
        ds = self.digits(split)
        return {"digits.source": ds.source, "digits.sha256": ds.sha256}


class MnistConfig(CanvasConfig):
    type: str = "mnist"
    canvas: tuple[int, int] = (DIGIT, DIGIT)

    @model_validator(mode="after")
    def _plain(self) -> MnistConfig:
        if self.canvas != (DIGIT, DIGIT) or self.distractors != (0, 0):
            raise ValueError("the 'mnist' task is the 28x28 digit as is; use 'translated' or 'cmnist' for canvases")
        return self


class MnistTask(CanvasTask):
    """Plain 28×28 digits, as is (target box = the digit's ink)."""

    Config = MnistConfig


class TranslatedConfig(CanvasConfig):
    type: str = "translated"
    canvas: tuple[int, int] = (60, 60)


class TranslatedTask(CanvasTask):
    """One digit at a random position on a blank canvas (default 60×60)."""

    Config = TranslatedConfig


class ClutteredConfig(CanvasConfig):
    type: str = "cmnist"
    canvas: tuple[int, int] = (60, 60)
    distractors: tuple[int, int] = (4, 4)


class ClutteredTask(CanvasTask):
    """Translated digit plus a fixed number of 8×8 patches of other digits (default 60×60, 4)."""

    Config = ClutteredConfig


class ModifiedClutteredConfig(CanvasConfig):
    type: str = "mcmnist"
    canvas: tuple[int, int] = (100, 100)
    distractors: tuple[int, int] = (4, 20)


class ModifiedClutteredTask(CanvasTask):
    """M-CMNIST: random distractor count in a range, optional colour, any canvas (default 100×100, 4–20)."""

    Config = ModifiedClutteredConfig


def function_task(fn: Any, name: str) -> type[DatasetGenerator]:
    """A DatasetGenerator class around a plain generate function, for quick experiments
    (`--dataset my_tasks:make_canvases`, `lgdram.register("dataset", "mine", make_canvases)`).

    `fn(n, split, seed, device="cpu", start=0) -> CanvasBatch` follows
    `DatasetGenerator.generate`'s contract (deterministic, slicing-independent). Channels and
    canvas size are read from a first canvas; the number of classes from the function's
    `classes` attribute (default 10; read when asked, so a decorator may come first). The
    config has only `type`."""

    class FunctionTaskConfig(DatasetConfig):
        type: str = name

    class FunctionTask(DatasetGenerator):
        Config = FunctionTaskConfig
        description = plugin_description(fn) or f"generate function {getattr(fn, '__qualname__', name)}"

        def __init__(self, config: DatasetConfig) -> None:
            super().__init__(config)
            self._shape: tuple[int, int, int] | None = None

        def _first(self) -> tuple[int, int, int]:
            if self._shape is None:
                images = getattr(fn(1, "train", 0, "cpu", 0), "images", None)
                if not isinstance(images, torch.Tensor) or images.dim() != 4:
                    from lgdram_cli.errors import UserError

                    shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
                    raise UserError(
                        f"dataset '{name}' (function {getattr(fn, '__qualname__', fn)}) returned images "
                        f"{shape}; a CanvasBatch's images are uint8 [N, C, H, W]"
                    )
                self._shape = tuple(images.shape[1:])
            return self._shape

        @property
        def channels(self) -> int:
            return self._first()[0]

        @property
        def size(self) -> tuple[int, int]:
            return self._first()[1:]

        @property
        def classes(self) -> int:
            return int(getattr(fn, "classes", 10))

        def generate(
            self, n: int, split: str, seed: int, device: torch.device | str = "cpu", start: int = 0
        ) -> CanvasBatch:
            return fn(n, split, seed, device, start)

    FunctionTask.__qualname__ = FunctionTask.__name__ = f"FunctionTask[{getattr(fn, '__qualname__', name)}]"
    FunctionTask.__module__ = getattr(fn, "__module__", __name__)
    return FunctionTask
