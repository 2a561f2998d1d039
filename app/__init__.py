"""Loupe front ends: the desktop app (Qt) and the ``loupe`` command line.

Importing this package imports nothing from Qt; the GUI modules do that themselves.
"""
