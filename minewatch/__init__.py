"""minewatch: coal-mine gas and ventilation monitoring and alarm service.

This package holds what every other package shares (mine configuration, settings, reading
shapes, the store interface, the event bus) and the CLI entry point. Its shared modules import
nothing from ingest/, alarms/, api/ or simulators/; only ``service`` and ``cli`` (the
composition root) do.
"""

__version__ = "0.1.0"
