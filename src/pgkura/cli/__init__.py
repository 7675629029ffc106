"""The ``pgkura`` command line: :mod:`pgkura.cli.app` is the application, one module per verb.

Kept empty so that importing one verb module imports nothing else.
"""
