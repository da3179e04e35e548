"""Flow definitions, correlation and evaluation (see issue 3; nothing here yet)."""
