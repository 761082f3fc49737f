"""db_api package."""
