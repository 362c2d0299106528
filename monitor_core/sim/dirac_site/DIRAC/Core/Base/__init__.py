"""Scripts' start-up."""
