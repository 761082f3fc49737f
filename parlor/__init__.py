"""parlor package."""
