"""`python -m petitions.audit verify [--case ID]` / `verify-export FILE`: see petitions.audit_cli."""
from __future__ import annotations

import sys

from petitions.audit_cli import main

if __name__ == "__main__":
    sys.exit(main())
