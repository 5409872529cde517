from __future__ import annotations

from strangler.cli import main

raise SystemExit(main())
