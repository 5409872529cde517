"""precedence package."""
