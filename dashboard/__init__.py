"""The Streamlit dashboard (docs/dashboard.md): ``dashboard/app.py`` and its pages in
``dashboard/views``; it reads the syncwatch API over HTTP only (``dashboard.client``)."""
