"""A worker whose agent allows an MCP tool its server does not offer refuses to start, naming the tool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.fixtures.mcp_tools import stdio_server
from tests.fixtures.stack import PROJECT_ROOT, free_port

pytestmark = [pytest.mark.bus, pytest.mark.timeout(120)]


def test_an_allowed_tool_the_server_does_not_offer_stops_the_worker(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    agents = yaml.safe_load((config / "agents.yaml").read_text())
    server = {**stdio_server(tmp_path / "calls.jsonl"), "allow": ["lookup_invoice", "refund_everything"]}
    agents["agents"]["expense-intake"]["mcp_servers"] = [server]
    (config / "agents.yaml").write_text(yaml.safe_dump(agents))
    env = {
        **os.environ,
        "HANDRAIL_CONFIG_DIR": str(config),
        "HANDRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HANDRAIL_REDIS_URL": redis_url,
        "HANDRAIL_SIGNING_REQUIRED": "false",
        "HANDRAIL_HTTP_PORT": str(free_port()),
        "HANDRAIL_DATA_DIR": str(tmp_path / "data"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "handrail_worker", "--agent", "expense-intake"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode != 0
    assert (
        "MCP server 'billing': `allow` names tools the server does not offer: ['refund_everything']" in done.stderr
    ), done.stderr[-2000:]
