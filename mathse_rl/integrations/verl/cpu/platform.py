"""The ``cpu`` platform for verl: gloo collectives, no-op device memory, Ray ``GPU`` slots.

verl schedules every worker on Ray ``GPU`` resources and asks its platform object for a
device module, a collective backend and memory hooks. On a laptop there is no accelerator,
so this platform answers with the CPU: Ray's ``GPU`` slots are logical ones given through
``+ray_kwargs.ray_init.num_gpus=N``, collectives run on gloo, and memory/cache/seed
calls that only make sense on an accelerator do nothing.
"""

from __future__ import annotations

import contextlib
import functools
import types
from typing import Any, Optional

import torch
from verl.plugin.platform import PlatformBase

PLATFORM_NAME = "cpu"


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


def _zero(*_args: Any, **_kwargs: Any) -> int:
    return 0


class _CpuDeviceModule(types.ModuleType):
    """``torch.cpu`` plus the ``torch.cuda``-style calls verl makes on its device module.

    Memory statistics read 0, cache/seed/peak calls do nothing, ``current_device()`` is
    ``"cpu"`` (verl builds ``torch.device(current_device())``; an integer would mean an
    accelerator index). Anything else falls through to ``torch.cpu``.
    """

    _ZERO = ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved")
    _NOOP = ("empty_cache", "reset_peak_memory_stats", "reset_max_memory_allocated", "ipc_collect",
             "manual_seed", "manual_seed_all", "set_per_process_memory_fraction")

    def __init__(self) -> None:
        super().__init__("mathse_rl_cpu_device")

    def __getattr__(self, name: str) -> Any:
        if name in self._ZERO:
            return _zero
        if name in self._NOOP:
            return _noop
        if name == "mem_get_info":
            return lambda *_a, **_k: (0, 0)
        if name == "memory_stats":
            return lambda *_a, **_k: {}
        if name == "get_device_name":
            return lambda *_a, **_k: "CPU"
        if name == "get_rng_state":
            return lambda *_a, **_k: torch.get_rng_state()
        if name == "set_rng_state":
            return lambda state, *_a, **_k: torch.set_rng_state(state)
        return getattr(torch.cpu, name)

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def set_device(_device: Any) -> None:
        return None

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1


DEVICE_MODULE = _CpuDeviceModule()


class PlatformCPU(PlatformBase):
    """verl platform ``cpu`` (select it with ``VERL_PLATFORM=cpu``)."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: the CPU platform is chosen explicitly or not at all.
        return False

    def current_device(self) -> str:  # type: ignore[override]
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets this for actors holding (logical) GPU slots; verl reads it for local ranks.
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        # Workers keep asking Ray for "GPU": the slots are logical (ray_init.num_gpus).
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def _dedupe_backend(backend: Any) -> Any:
    """``cpu:gloo,cpu:gloo`` -> ``cpu:gloo``: verl joins a CPU and a device backend, both gloo here."""
    if not isinstance(backend, str) or "," not in backend:
        return backend
    parts: list[str] = []
    for part in backend.split(","):
        if part not in parts:
            parts.append(part)
    return ",".join(parts)


def patch_process_group_init() -> None:
    """Make ``torch.distributed.init_process_group`` accept verl's doubled gloo backend string."""
    import torch.distributed as dist

    original = dist.init_process_group
    if getattr(original, "_mathse_cpu", False):
        return

    @functools.wraps(original)
    def init_process_group(*args: Any, **kwargs: Any):
        if "backend" in kwargs:
            kwargs["backend"] = _dedupe_backend(kwargs["backend"])
        elif args:
            args = (_dedupe_backend(args[0]),) + tuple(args[1:])
        return original(*args, **kwargs)

    init_process_group._mathse_cpu = True  # type: ignore[attr-defined]
    dist.init_process_group = init_process_group


def register_fsdp_engines() -> None:
    """Register verl's own FSDP/FSDP2 engines for the ``cpu`` device (they run there unchanged)."""
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp import transformer_impl

    engines = getattr(EngineRegistry, "_engines")
    for model_type, cls in (("language_model", transformer_impl.FSDPEngineWithLMHead),
                            ("value_model", transformer_impl.FSDPEngineWithValueHead)):
        for backend in ("fsdp", "fsdp2"):
            slot = engines.setdefault(model_type, {}).setdefault(backend, {})
            slot.setdefault(PLATFORM_NAME, cls)


def register_platform() -> None:
    from verl.plugin.platform import PlatformRegistry

    PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)


def canonical_3d_position_ids(data: Any) -> None:
    """Put nested 3-D (M-RoPE) ``position_ids`` in the layout verl slices: ragged on the last dim.

    verl expects each sample's ``(4, L_i)`` block to be stored as ``values`` of shape
    ``(4, sum L_i)`` with ``_ragged_idx = 2``. A batch can also arrive (after crossing Ray
    and verl's transfer queue) either with ``_ragged_idx`` reset by pickling, or, when every
    sample has the same length, nested along the first dim (``values`` ``(4 * B, L)``,
    offsets stepping by 4). verl's ``maybe_fix_3d_position_ids`` only sets ``_ragged_idx = 2``,
    which repairs the first case and corrupts the second; this repairs both.
    """
    from verl.utils import tensordict_utils as tu

    if data is None or "position_ids" not in data.keys():
        return
    pos = data["position_ids"]
    if not (isinstance(pos, torch.Tensor) and pos.is_nested and pos.dim() == 3):
        return
    values, offsets = pos.values(), pos.offsets()
    total = int(offsets[-1])
    if values.dim() != 2:
        return
    if values.shape[1] == total and values.shape[0] != total:
        pos._ragged_idx = 2  # right layout, lost attribute
        return
    if values.shape[0] == total:  # nested along the rows: each component is (rows_i, L)
        blocks = list(values.split(offsets.diff().tolist(), dim=0))
        data["position_ids"] = tu.nested_tensor_from_tensor_list(blocks, ragged_idx=2)


def patch_ragged_position_ids() -> None:
    """Use :func:`canonical_3d_position_ids` wherever verl repairs or slices a batch.

    Replaces verl's ``maybe_fix_3d_position_ids`` (in its module and where it was imported
    by name) and repairs the batch at the entry of verl's slicing helpers, since a
    mini-batch iterator slices before verl's own repair runs.
    """
    import sys

    from verl.utils import tensordict_utils as tu

    original_fix = tu.maybe_fix_3d_position_ids
    if not getattr(original_fix, "_mathse_cpu", False):
        canonical_3d_position_ids._mathse_cpu = True  # type: ignore[attr-defined]
        for name, module in list(sys.modules.items()):
            # Look in verl's own modules only, and without getattr: lazy modules import on access.
            if name.startswith("verl.") and vars(module).get("maybe_fix_3d_position_ids") is original_fix:
                module.maybe_fix_3d_position_ids = canonical_3d_position_ids
        tu.maybe_fix_3d_position_ids = canonical_3d_position_ids

    for name in ("index_select_tensor_dict", "chunk_tensordict"):
        original = getattr(tu, name)
        if getattr(original, "_mathse_cpu", False):
            continue

        def repaired(td, *args, __original=original, **kwargs):
            canonical_3d_position_ids(td)
            return __original(td, *args, **kwargs)

        functools.update_wrapper(repaired, original)
        repaired._mathse_cpu = True  # type: ignore[attr-defined]
        setattr(tu, name, repaired)
