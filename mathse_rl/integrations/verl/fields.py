"""The extra fields a ``mathse_reflect`` output carries to verl, and what an output is.

A module of names only (no verl import), shared by the agent loop that writes the fields,
the ``mathse`` trainer that reads them and the worker fix in :mod:`.compat` that recognises a
MathSE session; importing it never imports verl, so none of them depends on another's import.
"""

from __future__ import annotations

from typing import Any, Sequence

# Extra fields every output of the loop carries (same keys on every output, so verl can stack them).
EXTRA_FIELDS = ("accepted", "first_correct", "is_refined", "refine_verified", "refine_attempts",
                "reflect_too_long", "reflect_truncated", "reflect_errors", "judge_error", "mathse_role",
                "mathse_counts", "mathse_verdict")
# The field that says what an output is ...
ROLE_FIELD = "mathse_role"
# ... the policy's own sample, a refinement added beside it (add), or a refinement returned in its
# place (replace).
ROLE_POLICY, ROLE_REFINEMENT, ROLE_REPLACEMENT = "policy", "refinement", "replacement"
# Non-tensor field the mathse trainer puts on validation batches (it reaches the loop's kwargs):
# validation scores the policy's own answer whatever the reflect mode.
VALIDATE_FIELD = "mathse_validate"


def role_of(extra_fields: Any) -> str | None:
    """An output's role, or None for an output no ``mathse_reflect`` loop wrote."""
    return extra_fields.get(ROLE_FIELD) if isinstance(extra_fields, dict) else None


def has_added_refinement(outputs: Sequence[Any]) -> bool:
    """Whether a session's outputs (verl ``AgentLoopOutput``\\ s) include a refinement added
    beside the policy's answer."""
    return any(role_of(getattr(o, "extra_fields", None)) == ROLE_REFINEMENT for o in outputs)
