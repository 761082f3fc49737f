"""Export and import of chats.

- `reading`: an upload's bytes (JSON, or a zip holding it) to parsed JSON, within bounds.
- `chatgpt`, `openwebui`, `parlor`: each source format to `ChatDraft`s (pure functions).
- `tree`: a draft to a `PreparedChat` (checked tree, versions ordered, current branch).
- `schema`: Parlor's export format as pydantic models (docs/export-schema-v1.json is
  generated from them).
- `exporting`: chats from the database to JSON (one, or all streamed) and Markdown.
- `importing`: prepared chats into the database, one transaction each.
"""
