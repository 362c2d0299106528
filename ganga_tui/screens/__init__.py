"""Screens pushed over the main view: job detail, warnings, help, and prompts."""
