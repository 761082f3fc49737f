"""lm_api package."""
