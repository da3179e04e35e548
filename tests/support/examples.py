"""Where the conformance example of the spec lives: ``../shared/spec/examples`` beside the project
(as on the developers' machines and in CI), or ``SYNCWATCH_SPEC_EXAMPLES``."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLES = Path(
    os.environ.get("SYNCWATCH_SPEC_EXAMPLES", PROJECT.parent / "shared" / "spec" / "examples")
)
