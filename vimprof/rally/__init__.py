"""OpenStack Rally for Nova: a scenario plugin (plugin.py, loaded by Rally's own venv), the
task/environment generator (task.py) and the importer of Rally's JSON report into a run
directory (importer.py). CLI: `vimprof rally task|run|import`."""
