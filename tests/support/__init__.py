"""Builders and database helpers shared by the tests."""
