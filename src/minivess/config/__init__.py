"""Typed configuration: pydantic models are the single source of truth for every setting.

- :mod:`minivess.config.data`, :mod:`~minivess.config.model`, :mod:`~minivess.config.training`
  and :mod:`~minivess.config.experiment`: what an experiment does (``ExperimentConfig``),
  validated as a whole.
- :mod:`minivess.config.presets`: named presets (hydra-zen store); compose them with overrides
  through :func:`minivess.config.experiment.compose` or run sweeps with
  :func:`minivess.config.experiment.launch_experiment`.
- :mod:`minivess.config.settings`: where things live on this machine (Dynaconf:
  ``configs/settings.toml``, ``.secrets.toml``, ``MINIVESS_*`` variables), read with
  :func:`minivess.config.settings.get_settings`.

Nothing is imported here, so that ``import minivess.config.data`` stays light (the model config
imports torch through the adapter registry). See ``docs/configuration.md``.
"""
