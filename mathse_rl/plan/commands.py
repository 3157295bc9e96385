"""Launch command lines as each node runs them: a prefix (``srun``) hands ``bash -c LINE`` to every node,
whose shell expands LINE with that node's environment; without a prefix the launcher runs once, here.

    >>> cmd = ["srun", "--nodes=2", "--ntasks-per-node=1", "bash", "-c", "python -m x --rank $SLURM_NODEID"]
    >>> [expand_on_node(cmd, k) for k in range(2)]
    [['python', '-m', 'x', '--rank', '0'], ['python', '-m', 'x', '--rank', '1']]

:func:`check_command` parses an expanded line with the launcher's own argument parser (accelerate's,
torchrun's), so a quoting error or an unexpanded variable fails here, before a GPU is allocated.
"""

from __future__ import annotations

import os
import subprocess
from typing import Mapping, Sequence

SRUN_OPTIONS = {"-N": "--nodes", "-n": "--ntasks", "-c": "--cpus-per-task"}


def srun_options(prefix: Sequence[str]) -> dict[str, str]:
    """``--key=value`` / ``--key value`` / ``-N 2`` options of an ``srun`` prefix, by long name."""
    out: dict[str, str] = {}
    args = list(prefix[1:]) if prefix and os.path.basename(prefix[0]) == "srun" else []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            out[k] = v
        elif a in SRUN_OPTIONS or (a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("-")):
            out[SRUN_OPTIONS.get(a, a)] = args[i + 1] if i + 1 < len(args) else ""
            i += 1
        elif a.startswith("--"):
            out[a] = ""
        i += 1
    return out


def node_environment(prefix: Sequence[str], node: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables SLURM sets for the task of ``srun`` on node ``node`` (one task per node)."""
    env = dict(os.environ if base is None else base)
    opts = srun_options(prefix)
    if not opts and not (prefix and os.path.basename(prefix[0]) == "srun"):
        return env
    nodes = int(opts.get("--nodes", env.get("SLURM_NNODES", "1")).split("-")[0])
    per_node = int(opts.get("--ntasks-per-node", "1"))
    env.update(SLURM_NODEID=str(node), SLURM_PROCID=str(node * per_node), SLURM_LOCALID="0",
               SLURM_NNODES=str(nodes), SLURM_JOB_NUM_NODES=str(nodes), SLURM_NTASKS=str(nodes * per_node),
               SLURM_STEP_NUM_NODES=str(nodes))
    # Without --cpus-per-task a step's task gets one CPU: the ranks and data loaders of a node share it.
    env["SLURM_CPUS_PER_TASK"] = opts.get("--cpus-per-task", "1")
    return env


def split_prefix(cmd: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
    """(prefix, the shell line or None, the argv run directly when there is no shell line)."""
    cmd = list(cmd)
    for i in range(len(cmd) - 2):
        if os.path.basename(cmd[i]) == "bash" and cmd[i + 1] == "-c":
            return cmd[:i], cmd[i + 2], []
    return [], None, cmd


def expand_on_node(cmd: Sequence[str], node: int, base_env: Mapping[str, str] | None = None) -> list[str]:
    """The argv that node ``node`` executes: bash itself expands the line with the node's environment."""
    prefix, line, direct = split_prefix(cmd)
    if line is None:
        return direct
    env = node_environment(prefix, node, base_env)
    script = '__mathse_argv() { printf "%s\\0" "$@"; }; __mathse_argv ' + line
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, timeout=30)
    if out.returncode != 0:
        raise ValueError(f"the node's shell cannot expand the launch line ({out.stderr.decode().strip()}): {line}")
    return out.stdout.decode().split("\0")[:-1]


def check_command(argv: Sequence[str]) -> str | None:
    """Parse an expanded launcher command with the launcher's own parser; the error message, or None.

    Knows ``python -m accelerate.commands.launch`` / ``accelerate launch`` and ``python -m
    torch.distributed.run`` / ``torchrun``; other commands pass unchecked.
    """
    argv = list(argv)
    rest, kind = None, None
    for i, a in enumerate(argv):
        if a in ("accelerate.commands.launch", "torch.distributed.run") and i and argv[i - 1] == "-m":
            rest, kind = argv[i + 1:], "accelerate" if a.startswith("accelerate") else "torchrun"
            break
        if os.path.basename(a) == "accelerate" and i + 1 < len(argv) and argv[i + 1] == "launch":
            rest, kind = argv[i + 2:], "accelerate"
            break
        if os.path.basename(a) == "torchrun":
            rest, kind = argv[i + 1:], "torchrun"
            break
    if kind is None:
        return None
    if kind == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        parser = launch_command_parser()
    else:
        from torch.distributed.run import get_args_parser

        parser = get_args_parser()
    parser.exit_on_error = False
    import contextlib
    import io

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(rest)
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "the launcher's parser refused it"
    except Exception as exc:  # argparse.ArgumentError with exit_on_error off
        return str(exc)
    for flag in ("--machine_rank", "--node_rank", "--num_processes", "--num_machines", "--nproc_per_node"):
        if flag in rest:
            value = rest[rest.index(flag) + 1] if rest.index(flag) + 1 < len(rest) else ""
            if not value.isdigit():
                return f"{flag} {value!r} is not a number (an unexpanded shell variable?)"
    return None
