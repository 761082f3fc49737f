"""chat_ui's routes, one module per area."""
