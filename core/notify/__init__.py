"""Notifications that reach people: routes, deliveries driven from the audit stream."""
