"""chat_ui package."""
