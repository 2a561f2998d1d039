"""The workstation's own windows and menus: workspaces, findings, settings, import, new model, export, tags.

``app.workstation.menus.install(window)`` adds them to the main window; each dialog talks to the workspace only
through core functions run off the UI thread.
"""
