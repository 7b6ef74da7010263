"""`jobgate mcp`: a jobgate deployment as MCP tools for agents (needs the `mcp` extra)."""
