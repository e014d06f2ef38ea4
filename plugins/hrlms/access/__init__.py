"""Access timeliness: did hires get their LMS account before day one, and leavers lose it in time."""
