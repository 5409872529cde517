"""shadow package."""
