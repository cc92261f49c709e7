"""Planners: decide whether code must run, run it through the sandbox, compose the answer."""
