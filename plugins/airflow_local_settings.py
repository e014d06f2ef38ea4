"""Airflow's local settings: Airflow imports this module in each of its processes at start-up (the plugins
folder is on its path). It preloads the task modules in the processes that fork task processes
(hrlms.preload: the scheduler, Celery workers); every other setting is Airflow's own."""
from hrlms.preload import preload

preload()
