"""The weekly KPI report (issue 7): its content for an ISO week in the configured time zone, its
formats (HTML, PDF, Markdown), where it is kept, when it is made and to whom it is sent."""
