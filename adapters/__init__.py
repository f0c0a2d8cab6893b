"""Adapters: one module per outside system (spool, DNS, network, mailboxes, logs, clock)."""
