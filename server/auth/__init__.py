"""Accounts and sessions: password hashing, signing keys, tokens, the auth routes."""
