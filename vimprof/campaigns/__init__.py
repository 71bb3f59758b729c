"""Campaigns: instantiations fired at a VIM and recorded into a run directory.

`engine` holds what every VIM shares (leftovers, manifest, capture, progress, signals); `nomad`
and `nova` hold one VIM each (its target, its run body, its CLI entry).
"""
