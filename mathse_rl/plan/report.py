"""A plan as text: one table per GPU and phase, disk, launch lines per node, problems.

Numbers in GB (1e9 bytes). Lines marked ``~`` are estimates (activations, runtime overhead, KV cache
needs); the rest are counted from the model's parameters and the sharding.
"""

from __future__ import annotations

from typing import Any

from mathse_rl.plan.memory import GB


def _gb(n: int) -> str:
    return f"{n / GB:7.1f}"


def render(plan: Any) -> str:
    a = plan.assumptions
    out = [f"plan of {plan.recipe} ({plan.kind})"]
    if plan.model is not None:
        m = plan.model
        out.append(f"model: {m.name}: {m.params:,} parameters ({m.vision_params:,} in the vision tower), "
                   f"largest module {m.largest_module_params:,}")
    out.append(f"assumed: {a.gpu_gb:g} GB per GPU; prompts of {a.prompt_tokens} text tokens + "
               f"{a.images_per_prompt} image(s) x {a.image_tokens} tokens; a judge item {a.judge_tokens} tokens")
    for t in plan.tables:
        out.append("")
        out.append(f"{t.title}")
        out.append(f"  {'GB':>7}  what")
        for line in t.lines:
            mark = "~" if line.estimate else " "
            note = f"  ({line.note})" if line.note else ""
            out.append(f" {mark}{_gb(line.bytes)}  {line.name}{note}")
        out.append(f"  {_gb(t.used)}  total of {t.capacity / GB:.0f} GB")
        out.append(f"  {_gb(t.left)}  left{'' if t.fits else '  <-- DOES NOT FIT'}")
    if plan.disk:
        out.append("")
        out.append("disk")
        for what, n, note in plan.disk:
            out.append(f"  {_gb(n)}  {what}" + (f"  ({note})" if note else ""))
    if plan.commands:
        import shlex

        out.append("")
        out.append("launch lines, as each node's shell expands them")
        for c in plan.commands:
            out.append(f"  [{c.what}, node {c.node}] {shlex.join(c.argv)}")
            if c.error:
                out.append(f"    REFUSED by the launcher's parser: {c.error}")
    for n in plan.notes:
        out.append(f"note: {n}")
    out.append("")
    out.append("fits: yes" if plan.fits else "fits: NO")
    out.extend(f"problem: {p}" for p in plan.problems)
    return "\n".join(out)
