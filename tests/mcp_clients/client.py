#!/usr/bin/env python3
"""A real MCP client (the official Python SDK, `mcp` 2.3) driving the supervisor, for tests/mcp_python.rs.

It connects over streamable HTTP or stdio, negotiates the protocol, runs a list of operations and prints
one JSON document describing what happened; the Rust tests assert on it. Nothing here decides whether a
result is right.

    client.py JOBS [--parallel]

JOBS is a JSON array; each job is one connection, run one after the other — or all at once with
--parallel (concurrent clients) — in one Python start-up (importing the SDK takes a second):
    {"url": "http://127.0.0.1:PORT/mcp/meta", "token": T?, "mode": M?, "ops": OPS}
    {"stdio": "/path/to/supervisor", "args": ["mcp", "--project", "P"], "cwd": DIR, "env": {K: V}, "mode": M?, "ops": OPS}

OPS is a JSON array of operations, each an object with "op":
    {"op": "list_tools"}                                  -> {"tools": [{"name", "description", "input_schema", "output_schema"}]}
    {"op": "call", "name": N, "arguments": {...}}         -> {"is_error", "structured", "text"}
    {"op": "list_resources"}                              -> {"resources": [{"uri", "name", "mime_type"}]}
    {"op": "read_resource", "uri": U}                     -> {"contents": [{"uri", "text", "mime_type"}]}
    {"op": "list_prompts"}                                -> {"prompts": [{"name", "arguments"}]}
    {"op": "get_prompt", "name": N, "arguments": {...}}   -> {"messages": [{"role", "text"}]}
    {"op": "ping"}                                        -> {}
An operation that raises gives {"error": {"type", "code", "message"}} instead, and the next one runs.

Modes: "legacy" is the initialize handshake (a session, protocol 2025-11-25); "auto" is the SDK's default
policy: probe server/discover and use the newest modern (stateless, 2026-07-28) revision the server
offers, falling back to the handshake.

Output: a JSON array with one report per job: {"connected": bool, "protocol_version", "server_info",
"http_statuses": [...], "results": [...], "connect_error"?}. http_statuses are the status codes of every HTTP response the SDK's own HTTP client
received, in order (HTTP only). Exit status 0 whenever the reports were printed.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError


def error_of(exc: BaseException) -> dict[str, Any]:
    # anyio task groups wrap failures in ExceptionGroups; report the innermost cause.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    out: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, MCPError):
        out["code"] = exc.code
        out["data"] = exc.data
    return out


def text_of(content: list[Any]) -> str:
    return "\n".join(getattr(c, "text", "") for c in content if getattr(c, "type", None) == "text")


async def run_op(client: Client, op: dict[str, Any]) -> dict[str, Any]:
    kind = op["op"]
    if kind == "list_tools":
        r = await client.list_tools()
        return {
            "tools": [
                {
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.input_schema,
                    "output_schema": t.output_schema,
                }
                for t in r.tools
            ]
        }
    if kind == "call":
        r = await client.call_tool(op["name"], op.get("arguments") or {})
        return {"is_error": bool(r.is_error), "structured": r.structured_content, "text": text_of(r.content)}
    if kind == "list_resources":
        r = await client.list_resources()
        return {"resources": [{"uri": str(x.uri), "name": x.name, "mime_type": x.mime_type} for x in r.resources]}
    if kind == "read_resource":
        r = await client.read_resource(op["uri"])
        return {
            "contents": [
                {"uri": str(c.uri), "text": getattr(c, "text", None), "mime_type": c.mime_type} for c in r.contents
            ]
        }
    if kind == "list_prompts":
        r = await client.list_prompts()
        return {
            "prompts": [
                {"name": p.name, "arguments": [a.name for a in (p.arguments or [])]} for p in r.prompts
            ]
        }
    if kind == "get_prompt":
        r = await client.get_prompt(op["name"], op.get("arguments"))
        return {"messages": [{"role": m.role, "text": getattr(m.content, "text", None)} for m in r.messages]}
    if kind == "ping":
        await client.send_ping()
        return {}
    raise ValueError(f"unknown op {kind!r}")


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    statuses: list[int] = []
    out: dict[str, Any] = {"connected": False, "http_statuses": statuses, "results": []}

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    http = None
    if "url" in job:
        token = job.get("token")
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"} if token else None)
        http.event_hooks["response"].append(record)
        transport: Any = streamable_http_client(job["url"], http_client=http)
    else:
        transport = StdioServerParameters(
            command=job["stdio"], args=job.get("args", []), env=job.get("env", {}), cwd=job.get("cwd")
        )

    try:
        # cache=None: every list call reaches the server (the tests count what the server says).
        async with Client(transport, mode=job.get("mode", "legacy"), cache=None, read_timeout_seconds=30) as client:
            out["connected"] = True
            out["protocol_version"] = client.protocol_version
            info = client.server_info
            out["server_info"] = {"name": info.name, "version": info.version} if info else None
            for op in job["ops"]:
                try:
                    out["results"].append(await run_op(client, op))
                except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
                    out["results"].append({"error": error_of(exc)})
    except Exception as exc:  # noqa: BLE001 - a refused connection is an outcome the tests check
        out["connect_error"] = error_of(exc)
        out["connect_traceback"] = "".join(traceback.format_exception(exc))[-4000:]
    finally:
        if http is not None:
            await http.aclose()
    return out


async def main() -> int:
    jobs = json.loads(sys.argv[1])
    reports = []
    if "--parallel" in sys.argv[2:]:
        # Every connection at once (concurrent clients); reports in the jobs' order.
        reports = [None] * len(jobs)

        async def one(i: int, job: dict[str, Any]) -> None:
            reports[i] = await run_job(job)

        async with anyio.create_task_group() as tg:
            for i, job in enumerate(jobs):
                tg.start_soon(one, i, job)
    else:
        for job in jobs:
            reports.append(await run_job(job))
    print(json.dumps(reports, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
