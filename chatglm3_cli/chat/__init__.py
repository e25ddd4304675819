"""Conversations: the session (context window, KV reuse) and saved history. No UI here."""
