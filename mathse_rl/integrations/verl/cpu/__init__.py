"""Opt-in CPU backend for verl: debug a MathSE verl config on a laptop.

With ``VERL_PLATFORM=cpu`` set, our ``verl.plugins`` entry point calls :func:`enable` in
every verl process (driver and Ray workers). It registers, in verl's own registries:

- the platform ``cpu`` (gloo, Ray's logical ``GPU`` slots, no-op device memory calls),
- verl's FSDP/FSDP2 training engines for the ``cpu`` device,
- the rollout ``hf_cpu``: transformers ``generate`` behind verl's rollout-server interface,
  batching concurrent requests, images included, weights synced every step,
- an images-only Qwen2.5-VL processor for ``AutoProcessor`` and an images-only
  ``qwen_vl_utils`` when torchvision is absent,
- two repairs verl needs off-GPU: gloo's backend string is not doubled, and nested M-RoPE
  ``position_ids`` keep the layout verl slices after crossing Ray,
- the smoke-test reward ``length_parity`` (varies within a GRPO group for a random model).

Scope: one node, hybrid engine (rollout next to the trainer), images (no videos), FSDP/FSDP2,
verl's V1 trainer and the legacy one (``trainer.use_v1=False``).

Without ``VERL_PLATFORM=cpu`` nothing here is imported, so GPU runs never see it. Only
verl ``0.9.1`` is supported: on any other version the ``cpu`` platform is still registered
but raises a clear error as soon as verl asks for it.

    VERL_PLATFORM=cpu python -m verl.trainer.main_ppo \\
        actor_rollout_ref.rollout.name=hf_cpu +ray_kwargs.ray_init.num_gpus=1 ...

``scripts/verl_cpu_debug.sh`` runs a complete example; :func:`cpu_overrides` lists the
overrides a CPU run needs.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

# The one verl release this backend was built and tested against.
SUPPORTED_VERL = "0.9.1"
# Environment switch (verl's own) that selects the platform.
PLATFORM_ENV = "VERL_PLATFORM"

# Name of the smoke-test reward registered while the backend is on.
DEBUG_REWARD = "length_parity"

_ENABLED = False


def requested() -> bool:
    """True when the user asked verl for the CPU platform (``VERL_PLATFORM=cpu``)."""
    return os.environ.get(PLATFORM_ENV, "").strip().lower() == "cpu"


class UnsupportedVerlVersion(RuntimeError):
    pass


def _register_refusal(found: str) -> None:
    """Register a ``cpu`` platform that fails loudly: verl swallows plugin import errors."""
    from verl.plugin.platform import PlatformBase, PlatformRegistry

    message = (f"mathse-rl's CPU backend for verl supports verl=={SUPPORTED_VERL} only; found verl=={found}. "
               f"Install it with: pip install 'verl=={SUPPORTED_VERL}' (or unset {PLATFORM_ENV}).")

    class PlatformCPUUnsupported(PlatformBase):  # type: ignore[misc]
        def __new__(cls, *args, **kwargs):
            raise UnsupportedVerlVersion(message)

    PlatformRegistry.register(platform="cpu")(PlatformCPUUnsupported)
    logger.error(message)


def enable() -> bool:
    """Register the CPU platform, engines, rollout and processor fallback; idempotent.

    Returns True when the backend is active, False when verl's version is unsupported
    (then the ``cpu`` platform raises :class:`UnsupportedVerlVersion` on first use).
    """
    global _ENABLED
    if _ENABLED:
        return True
    import verl

    found = getattr(verl, "__version__", "unknown")
    if found != SUPPORTED_VERL:
        _register_refusal(found)
        return False
    from mathse_rl.integrations.verl.cpu import platform, processor, rollout_registry, vision

    platform.register_platform()
    platform.patch_process_group_init()
    platform.register_fsdp_engines()
    platform.patch_ragged_position_ids()
    processor.patch_auto_processor()
    vision.install()
    rollout_registry.register_rollout()
    _register_debug_reward()
    _ENABLED = True
    return True


def _register_debug_reward() -> None:
    """The smoke-test reward ``length_parity`` (varies within a group even for a random model)."""
    from mathse_rl.rewards import registry

    registry.register_reward(DEBUG_REWARD, "mathse_rl.integrations.verl.cpu.debug:LengthParityReward")


def cpu_overrides(num_workers: int = 1) -> list[str]:
    """The Hydra overrides a ``verl.trainer.main_ppo`` run needs on CPU (one logical GPU)."""
    return [
        f"trainer.n_gpus_per_node={num_workers}",
        "trainer.nnodes=1",
        "trainer.device=cpu",
        f"+ray_kwargs.ray_init.num_gpus={num_workers}",
        f"ray_kwargs.ray_init.num_cpus={4 * num_workers + 4}",
        "actor_rollout_ref.rollout.name=hf_cpu",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.ref.strategy=fsdp2",
        "actor_rollout_ref.model.use_remove_padding=False",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
    ]
