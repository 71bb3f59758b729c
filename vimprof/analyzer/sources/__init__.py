"""Stage 1 of the analyzer: capture files to TCP segments in time order.

pcap.py reads one classic pcap or pcapng file, record by record, down to `Packet`s (one TCP
segment each: time, addresses, ports, seq/ack, flags, payload); merge.py merges several
captures by corrected time (a clock offset per file) and parses the command line's
FILE[@OFFSET_MS]; growing.py reads a capture that tcpdump is still writing (live mode).
Nothing here knows about TCP streams or VIM protocols.
"""
