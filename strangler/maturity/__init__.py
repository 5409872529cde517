"""maturity package."""
