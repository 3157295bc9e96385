"""Loop tests import their scripted components from ``scripted_parts.py`` beside this file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
