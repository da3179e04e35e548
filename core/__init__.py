"""The bottom layer: domain types, event vocabulary, settings, the store and its migrations."""
