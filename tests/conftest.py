import sys
from pathlib import Path

# tests/bed and tests/e2e import each other's helpers.
HERE = Path(__file__).resolve().parent
for sub in ("bed", "e2e"):
    p = str(HERE / sub)
    if p not in sys.path:
        sys.path.insert(0, p)
