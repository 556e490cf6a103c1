"""The Registry's wire protocol: ``proto/`` and the code generated from it in ``gen/``."""
