"""KPI computation and the Prometheus exporter (see issue 4; nothing here yet)."""
