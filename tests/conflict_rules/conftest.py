"""Make the repository importable when pytest runs without an editable install.

`make install` installs the project editable; a bare `.venv/bin/pytest` run does not put
the repository root on sys.path (tests/ has no __init__.py), so add it here.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
