"""The REST service (BentoML): upload checks, the served model and the service class.

Import :mod:`minivess.serving.service` only where BentoML should load: it reads the deployment
settings and registers Prometheus metrics on import.
"""
