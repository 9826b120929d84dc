"""The terminal client: `shipdeck releases|approvals|targets ...` over the REST API."""
