"""`python -m handler.streaming`: the runtime loop (what `exec-wrapper` starts)."""

from __future__ import annotations

from handler.streaming.runtime import main

if __name__ == "__main__":
    main()
