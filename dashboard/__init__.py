"""The dispatch-room wall screen (static pages served by the API)."""

import os
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
# ECharts from npm (scripts/setup.sh runs npm ci here); the Docker image sets the variable.
VENDOR_DIR = Path(os.environ.get("MINEWATCH_VENDOR_DIR")
                  or Path(__file__).parent / "node_modules" / "echarts" / "dist")
