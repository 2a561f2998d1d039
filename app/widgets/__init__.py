"""Reusable Qt widgets of the Loupe desktop app (panels, plots); they call ``core`` and never decide anything clinical."""
