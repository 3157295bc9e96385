"""The reference-answer cache is bounded by size, not only by entries: megabyte golds do not pile up."""

from __future__ import annotations

import json
import subprocess
import sys


def test_distinct_megabyte_golds_do_not_grow_memory():
    code = (
        "import json; from mathse_rl.verify import verify_batch;"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20;"
        "verify_batch(['\\\\boxed{1}'], ['1']); start = rss();"
        "[verify_batch(['\\\\boxed{1}'], [str(i) + ' + x' * 250_000]) for i in range(300)];"
        "print(json.dumps({'start': start, 'end': rss()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    # 300 golds of 1 MB each: an entries-only cache kept all of them (~300 MB more).
    assert rss["end"] - rss["start"] < 100, rss


def test_gold_cache_size_is_capped_and_small_golds_still_hit():
    from mathse_rl.verify.core import parse_gold

    parse_gold.cache_clear()
    for i in range(40):
        parse_gold(str(i) + " + x" * 250_000)  # 1 MB each: over the per-item cap, never kept
    parse_gold("1/2")
    parse_gold("1/2")
    info = parse_gold.cache_info()
    assert info.chars <= 16 << 20 and info.entries == 1 and info.hits == 1
