"""Alert rules, the Alertmanager receiver and replays (see issue 5; nothing here yet)."""
