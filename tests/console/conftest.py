"""The console tests' shared fixtures."""

from __future__ import annotations

import subprocess

import pytest

from gemma_pipeline.inference.server import free_port, stop, wait_until_ready


@pytest.fixture
def server(tiny_project):
    """`gemma-pipeline serve` on a free port, default host; stopped after the test."""
    port = free_port()
    process = subprocess.Popen(
        ["gemma-pipeline", "serve", "--port", str(port)],
        cwd=tiny_project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        models = wait_until_ready(process, base_url)
        yield base_url, models, process
    finally:
        stop(process)
    assert process.poll() is not None
