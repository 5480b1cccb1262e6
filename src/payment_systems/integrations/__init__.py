"""Talking to the outside world: the PSP (sandbox and client) and its webhooks."""
