"""DIRAC's client API."""
