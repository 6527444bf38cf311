"""The applications: the ``stacker`` command (:mod:`stacker.apps.cli`), the demo and the HTML report.

The top layer.  They may import the core (``stacker``) and the satellites (``level1``,
``holdout``); nothing below imports them (``tests/test_layers.py`` checks it).
"""
