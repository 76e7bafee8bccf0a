"""A config section's defaults as the workflow's schema validation fills them in, for the tests
that check the library's option objects against the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def schema_defaults(section: str) -> dict[str, Any]:
    """``{key: default}`` of the keys of config section ``section`` that have a default."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    props = schema["properties"][section]["properties"]
    return {key: p["default"] for key, p in props.items() if "default" in p}
