"""Stage 4 of the analyzer: VIM messages to per-instance timelines.

router.py takes the decoders' messages as they complete (requests paired with their
replies) and routes them to nomad_phases.py (Nomad allocations, "vim": "nomad") or
nova_phases.py (Nova servers, "vim": "nova"), which turn them into events, phases and issues
per instance and emit each timeline (vimprof/phases.py shape) as soon as its instance is
finished. nomad_events.py builds timelines from Nomad's own event stream for instances the
capture has nothing about. Nothing here reads run files other than through its arguments.
"""
