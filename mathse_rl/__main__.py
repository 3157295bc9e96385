import sys

from mathse_rl.cli import main

sys.exit(main())
