"""Rule-based math answer verifier: extract -> normalise -> compare, with hard timeouts.

>>> from mathse_rl.verify import verify
>>> verify("... so the total is 12. The answer to this problem is 12.", "12").correct
True
>>> verify(r"\\boxed{1.2\\text{ m}}", r"120\\text{ cm}").reason
'numeric'

Typical rollouts are decided in-process by string/number normalisation and a bounded
arithmetic parser (no SymPy). Only answers that parser cannot read go to a supervised
pool of worker processes running math-verify, where a call that overruns its timeout
has its worker killed and replaced. Importing this package imports neither SymPy nor
math-verify, and starts no process.

Stages, one module each: ``text`` (unicode and LaTeX spelling), ``extract`` (where the
answer is), ``answer`` (what form it has), ``expr`` (bounded arithmetic), ``compare``
(equivalence), ``core`` (the pipeline, options), ``pool``/``worker`` (hard timeouts),
``api`` (``verify``, ``averify``, ``verify_batch``), ``cli`` (``mathse-rl verify``).
"""

from mathse_rl.types import Verdict
from mathse_rl.verify.api import averify, shutdown, verify, verify_batch, warmup
from mathse_rl.verify.core import gold_is_valid, parse_gold
from mathse_rl.verify.extract import extract_answer

__all__ = [
    "Verdict", "verify", "averify", "verify_batch", "extract_answer", "parse_gold", "gold_is_valid",
    "warmup", "shutdown",
]
