"""The MCP door: the tool registry over MCP (stdio and streamable HTTP), same governance."""
