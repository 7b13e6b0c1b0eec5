"""Loads the conformance plugin for every pytest run in this checkout."""

pytest_plugins = ["conformance.plugin"]
