"""hrlms: HR to LMS sync platform (Airflow plugins package)."""
