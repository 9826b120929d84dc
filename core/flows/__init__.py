"""Use cases that span releases, approvals and runtimes: preview, submit, decide, apply."""
