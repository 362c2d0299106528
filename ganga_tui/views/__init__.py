"""Views over the one fold, each small and tested alone (see :mod:`ganga_tui.job_store`)."""
