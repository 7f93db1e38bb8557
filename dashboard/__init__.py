"""The dispatch-room wall screen (static pages served by the API)."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
