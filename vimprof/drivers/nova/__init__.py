"""vimprof's Nova driver kit: a diskless LibvirtDriver subclass with timestamp hooks.

hooks.py (standard library only) and diskless.py run inside nova-compute on Debian's
/usr/bin/python3; install.py puts them there (package vimprof_nova_driver) with the one-line
shim nova/virt/vimprof_diskless.py that Nova's driver loader needs. Nothing here is imported by
the rest of vimprof except install.py.
"""
