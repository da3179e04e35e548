"""The Streamlit dashboard (see issue 6; nothing here yet)."""
