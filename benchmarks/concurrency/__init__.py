"""Five monitoring models against the same simulated services, and how they are measured."""
