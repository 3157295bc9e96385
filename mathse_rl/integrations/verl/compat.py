"""Fixes for places where verl 0.9.1 does not work with what MathSE runs beside it.

1. **trl.** The trl release our ``trl`` extra installs clashes with verl's FSDP path
   (:func:`install_trl_shim`, below).
2. **A session with two outputs** (:func:`install_session_scoring`). The ``mathse_reflect``
   agent loop in ``add`` mode returns a verified refinement beside the policy's own answer as
   two outputs of one session. verl's ``AgentLoopWorker._compute_score`` scores a session in
   one reward call over all its outputs and copies the result onto every output. Two things
   go wrong:

   - for a Qwen2-VL-family model (position ids of shape ``(4, seq_len)``) it stacks the
     outputs' position ids with ``pad_sequence``, which raises as soon as the refinement and
     the answer differ in length (almost always): the session fails, verl evicts the whole
     group and generates it again, and the verified refinement is never trained on;
   - the reward manager picks one row of that call (verl's ``naive`` manager the first, i.e.
     the refinement), so the policy's wrong answer could be rewarded as the refinement.

   The fix scores such a session on its last output, the policy's own answer, alone: the
   score the loop's docstring promises (the on-policy sample keeps its reward; the ``mathse``
   trainer gives the refinement its own advantage). Sessions of any other agent loop are
   scored by verl's code unchanged.
3. **A micro-batch without images** on a Qwen2-VL-family model under transformers 5
   (:func:`install_text_only_vision_fix`): verl's forward raises on it. Padding rows are
   text-only, so a micro-batch of padding alone (stock verl's or the ``mathse`` trainer's) fails.

The trl clash: verl's FSDP path (``verl.models.transformers.monkey_patch.apply_monkey_patch``,
called whenever the actor model is built) asks ``verl.utils.import_utils.is_trl_available()``
and, when it says yes, imports ``AutoModelForCausalLMWithValueHead`` from ``trl`` (or
``trl.experimental.ppo``) to patch its ``state_dict``. trl 1.16 ships neither, so with both
extras installed every verl run dies with ``ImportError: cannot import name
'AutoModelForCausalLMWithValueHead' from 'trl'`` before the first step.

The fix, :func:`install_trl_shim`, runs from our ``verl.plugins`` entry point, i.e. inside
``import verl`` in every process (driver and Ray workers). It wraps verl's
``is_trl_available`` so that it answers "is a trl with the value-head class installed?":

- trl absent, or trl with the class (older trl): the answer is verl's own, nothing changes;
- trl without the class (trl 1.16): the answer is False, so verl skips a patch of a class
  that does not exist instead of crashing.

The one verl feature that genuinely needs the class is a critic built from a causal LM
through trl's value head (``verl.utils.model.load_valuehead_model``, reached only when
the critic checkpoint is not a token-classification model); with trl 1.16 verl then
reports that trl is missing. MathSE does not use a critic (``mathse_rft`` and GRPO are
critic-free); a PPO user who needs one should use a token-classification critic checkpoint
or an environment with a trl that still has the class.

    >>> from mathse_rl.integrations.verl.compat import trl_value_head_available
    >>> isinstance(trl_value_head_available(), bool)
    True
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import warnings

# The trl class verl's FSDP path imports.
VALUE_HEAD_CLASS = "AutoModelForCausalLMWithValueHead"
# Where trl has kept the class over its releases, newest first.
VALUE_HEAD_MODULES: tuple[str, ...] = ("trl.experimental.ppo", "trl")
# verl modules that bind ``is_trl_available`` by name at their own import.
VERL_TRL_USERS: tuple[str, ...] = ("verl.models.transformers.monkey_patch", "verl.utils.model")
# Marker attribute on the installed wrapper (makes installing idempotent).
SHIM_MARKER = "_mathse_trl_shim"


@functools.cache
def trl_value_head_available() -> bool:
    """True when an installed trl exposes ``AutoModelForCausalLMWithValueHead``."""
    if importlib.util.find_spec("trl") is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trl warns on any import from trl.experimental
        for name in VALUE_HEAD_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            try:
                if getattr(module, VALUE_HEAD_CLASS, None) is not None:
                    return True
            except ImportError:  # trl's lazy module may fail while resolving the name
                continue
    return False


def shim_installed() -> bool:
    """Whether verl's ``is_trl_available`` is currently our wrapper."""
    import verl.utils.import_utils as import_utils

    return bool(getattr(import_utils.is_trl_available, SHIM_MARKER, False))


def install_trl_shim() -> bool:
    """Make verl treat a trl without the value-head class as absent; True if newly installed.

    Safe to call many times and in any process that has (or is importing) verl.
    """
    import verl.utils.import_utils as import_utils

    original = import_utils.is_trl_available
    if getattr(original, SHIM_MARKER, False):
        return False

    def is_trl_available() -> bool:
        # Only answers differently from verl when trl is installed but lacks the class.
        return bool(original()) and trl_value_head_available()

    setattr(is_trl_available, SHIM_MARKER, True)
    is_trl_available.__wrapped__ = original  # type: ignore[attr-defined]
    is_trl_available.__doc__ = "verl's is_trl_available, False when trl lacks " + VALUE_HEAD_CLASS
    import_utils.is_trl_available = is_trl_available
    # Modules imported before us hold their own reference to the original function.
    for name in VERL_TRL_USERS:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "is_trl_available", None) is original:
            module.is_trl_available = is_trl_available
    return True


# -- a session with an added refinement ----------------------------------------------------------
# Marker attribute on the installed wrapper (makes installing idempotent).
SCORING_MARKER = "_mathse_session_scoring"


def session_scoring_installed() -> bool:
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    return bool(getattr(AgentLoopWorker._compute_score, SCORING_MARKER, False))


def install_session_scoring() -> bool:
    """Score a ``mathse_reflect`` session with an added refinement on its policy output alone
    (see the module docstring); True if newly installed. Safe to call many times."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    from mathse_rl.integrations.verl.fields import has_added_refinement

    original = AgentLoopWorker._compute_score
    if getattr(original, SCORING_MARKER, False):
        return False

    @functools.wraps(original)
    async def _compute_score(self, outputs, kwargs):
        if len(outputs) > 1 and has_added_refinement(outputs):
            # verl then copies the last output's score onto the session's other outputs
            return await original(self, outputs[-1:], kwargs)
        return await original(self, outputs, kwargs)

    setattr(_compute_score, SCORING_MARKER, True)
    AgentLoopWorker._compute_score = _compute_score
    return True


# -- a micro-batch without images on a Qwen2-VL-family model ------------------------------------
# Marker attribute on the installed wrapper (makes installing idempotent).
TEXT_ONLY_MARKER = "_mathse_text_only_vision"


class _TensorVisual:
    """``model`` whose ``visual(...)`` returns the image embeddings tensor (transformers 5 returns an
    output object; verl's text-only branch calls ``.mean()`` on it)."""

    def __init__(self, model):
        self._model = model

    def visual(self, *args, **kwargs):
        from verl.utils.transformers_compat import unpack_visual_output

        return unpack_visual_output(self._model.visual(*args, **kwargs))[0]

    def __getattr__(self, name):
        return getattr(self._model, name)


def install_text_only_vision_fix() -> bool:
    """Make verl's Qwen2-VL / Qwen2.5-VL forward work on a micro-batch without images under
    transformers 5; True if newly installed. Safe to call many times.

    verl runs the vision tower on a dummy image when a micro-batch has no ``pixel_values`` (so
    every FSDP rank takes part in its all-gathers) and adds ``0 * image_embeds.mean()``; with
    transformers 5 the tower returns an output object, not a tensor, and the forward raises
    ``AttributeError: 'BaseModelOutputWithPooling' object has no attribute 'mean'``. Such a
    micro-batch is one made of verl's text-only padding rows (``trainer.ppo.padding_utils``): it
    happens in stock verl too whenever padding fills a micro-batch. The fix hands that branch the
    tower's embeddings tensor (what verl's image branch already reads, ``unpack_visual_output``);
    batches with images run verl's code unchanged.
    """
    import verl.models.transformers.qwen2_vl as qwen2_vl

    original = qwen2_vl._get_input_embeds
    if getattr(original, TEXT_ONLY_MARKER, False):
        return False

    @functools.wraps(original)
    def _get_input_embeds(model, input_ids, attention_mask=None, pixel_values=None, pixel_values_videos=None,
                          image_grid_thw=None, video_grid_thw=None):
        if pixel_values is None and pixel_values_videos is None:
            model = _TensorVisual(model)
        return original(model, input_ids, attention_mask, pixel_values, pixel_values_videos, image_grid_thw,
                        video_grid_thw)

    setattr(_get_input_embeds, TEXT_ONLY_MARKER, True)
    qwen2_vl._get_input_embeds = _get_input_embeds
    return True
