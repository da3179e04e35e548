"""syncwatch: observability and business KPIs for the CLM -> middleware -> ERP bridge."""

__version__ = "0.1.0"
