"""HTTP routes: chats and messages (owner-scoped), health and metrics (open)."""
