#!/usr/bin/env python3
"""Write math problems as verl RL parquet files (train.parquet / test.parquet).

    python scripts/prepare_verl_data.py --source geometry3k --out ~/data/geo3k
    python scripts/prepare_verl_data.py --source mathvista --out ~/data/mathvista
    python scripts/prepare_verl_data.py --source synthetic --limit 32 --out /tmp/toy   # offline
    python scripts/prepare_verl_data.py --input my.jsonl --format mathvista --split test --out ~/data/mine

See mathse_rl/data/verl_parquet.py for the row layout.
"""

import sys

from mathse_rl.data.verl_parquet import main

if __name__ == "__main__":
    sys.exit(main())
