# shellcheck shell=bash
# clients_install: the MCP test clients the suite drives (filled in as the MCP endpoints land).
clients_install() { :; }
