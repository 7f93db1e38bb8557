"""Shared fixtures: a real minewatch service process on loopback with its simulated mine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from minewatch.procs import ROOT, ServiceProcess, start_service

ARTIFACTS = ROOT / "artifacts"
RunningService = ServiceProcess
__all__ = ["ARTIFACTS", "ROOT", "RunningService"]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    svc = start_service(tmp_path)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory) -> Iterator[ServiceProcess]:
    """One service for the read-only tests of a module."""
    svc = start_service(tmp_path_factory.mktemp("svc"))
    try:
        yield svc
    finally:
        svc.stop()
