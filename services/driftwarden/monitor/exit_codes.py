"""How a monitor worker asks its supervisor for a restart (docs/operations.md, "Offsets follow checkpoints").

A worker that cannot go on without losing or reordering input exits with one of these codes, having
committed nothing beyond its last durable checkpoint; the restarted worker replays from that checkpoint.
A supervisor (compose's ``restart: unless-stopped``, systemd's ``Restart=on-failure``, a Kubernetes
Deployment) restarts it; any other exit code is a crash.

>>> sorted(RESTART_EXITS)
[75, 76]
"""

from __future__ import annotations

#: Even the dead-letter topic cannot be written.
EXIT_CANNOT_PUBLISH = 75
#: Input arrived out of order (an offset beyond the next expected one while those between are on the topic).
EXIT_OUT_OF_ORDER = 76
#: The exit codes that mean "restart me: the restart replays from the last checkpoint".
RESTART_EXITS = frozenset({EXIT_CANNOT_PUBLISH, EXIT_OUT_OF_ORDER})
