"""The peer in `cargo bench --bench mcp`: the official MCP Python SDK's server (MCPServer over streamable
HTTP, uvicorn) answering the benchmark's tools from in-memory data, as the bare rmcp server does.

    python benches/peers/python_sdk_server.py PORT

Prints `python-sdk serving on http://127.0.0.1:PORT` when it listens. Same answers as the bare rmcp
peer in benches/mcp.rs; no authentication, no storage: the figure is the SDK's own cost per call.
"""

import logging
import sys
import time
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer

PROJECT = "bench"
PORTS = {"api": 20001, "web": 20000}
SECRETS = {"project/bench/api_key": "bench-secret-value-0123456789abcdef"}

server = MCPServer("python-sdk-peer")


@server.tool()
def get_port(service: str, project: str | None = None, allocate: bool | None = None) -> dict[str, Any]:
    """The port of a service."""
    return {"project": PROJECT, "service": service, "port": PORTS[service], "hostname": None,
            "allocated_now": False}


@server.tool()
def get_secret(path: str) -> dict[str, Any]:
    """A secret's value."""
    return {"path": path, "value": SECRETS[path]}


@server.tool()
def estimate_task(description: str, task_type: str, project: str | None = None) -> dict[str, Any]:
    """An estimate for a task."""
    return {"task_id": None, "estimated_seconds": 600.0, "interval_low_seconds": 120.0,
            "interval_high_seconds": 3000.0, "sample_size": 10, "method": "fixed", "similar_tasks": []}


@server.tool()
def search_knowledge(query: str, project: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """Knowledge search."""
    return {"strategy": "fixed", "hits": [{"id": 1, "score": 1.0, "title": "doc", "document": "doc.md",
                                             "snippet": query[:80]}]}


@server.tool()
def start_task_timer(description: str, task_type: str, project: str | None = None) -> dict[str, Any]:
    """Start a timer."""
    return {"task_id": f"t{time.monotonic_ns()}", "project": PROJECT, "task_type": task_type,
            "started_at": "now"}


@server.tool()
def complete_task_timer(task_id: str, success: bool | None = None) -> dict[str, Any]:
    """Complete a timer."""
    return {"task_id": task_id, "project": PROJECT, "task_type": "t", "status": "completed",
            "duration_seconds": 1.0}


if __name__ == "__main__":
    # Like `serve`, no log line per session or call.
    logging.disable(logging.INFO)
    port = int(sys.argv[1])
    stateless = len(sys.argv) > 2 and sys.argv[2] == "stateless"
    app = server.streamable_http_app(streamable_http_path="/mcp/bench", json_response=True,
                                     stateless_http=stateless)
    print(f"python-sdk serving on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
