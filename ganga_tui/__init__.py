"""ganga_tui: the live terminal UI of ganga-monitor, and its headless mode."""

__all__: list[str] = []
