"""Entry point for worker (and dispatcher) subprocesses in the cluster tests.

Exactly ``hoovik-bot worker …`` / ``hoovik-bot dispatch …`` (the same parsers), plus loopback-only
ICE: aioice never offers 127.0.0.1 host candidates, and every peer here runs on this machine.
"""

from __future__ import annotations

import sys

from bot.cluster.cli import main
from bot.webrtc.ice import use_loopback_ice

if __name__ == "__main__":
    use_loopback_ice()
    sys.exit(main())
