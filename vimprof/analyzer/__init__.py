"""The analyzer: captures -> TCP streams -> HTTP / Nomad RPC / AMQP -> per-instance timelines.

Stages, down the stream (each imports only its own stage and earlier ones; tests/
test_import_graph.py checks it; docs/analyzer.md says what passes between them):

1. sources/ — capture files to TCP segments (`Packet`s) in time order: pcap.py (one pcap
   or pcapng file), merge.py (several merged by corrected time, FILE[@OFFSET_MS]),
   growing.py (a capture still being written, live mode).
2. tcp.py — TCP reassembly: segments to ordered byte streams per connection (data, gaps,
   close) handed to a decoder per VIM connection.
3. decoders/ — byte streams to messages: http.py (HTTP/1.1), nomad_rpc.py (yamux +
   msgpack-rpc), amqp.py (AMQP 0-9-1), oslo.py (oslo.messaging bodies, Nova objects),
   tls.py (TLS detection), timemap.py (stream offset -> capture time), ports.py (which
   port gets which decoder).
4. builders/ — messages to per-instance events, phases and timelines: router.py (pairs
   requests and replies, routes by VIM), nomad_phases.py, nova_phases.py, nomad_events.py
   (timelines from Nomad's event stream when the capture has none).
5. enrich.py — hooks.jsonl, vim-events.jsonl and requests.jsonl merged into each timeline
   and cross-checked; which instances are the campaign's.
6. sink.py — timelines to the run's timelines.jsonl (TimelineSpool); AnalysisResult.
7. pipeline.py — the entry: composes the stages (stream_capture, decode_capture, analyze,
   analyze_capture, analyze_sources, analyze_run).
8. follow.py — live mode on top of the pipeline (`vimprof analyze --follow`,
   `vimprof capture --live`).

scrub.py is a tool beside the pipeline (`python -m vimprof.analyzer.scrub`: credentials out
of a capture), built on sources and tcp.
"""

from vimprof.analyzer.pipeline import analyze_capture, analyze_run, decode_capture
from vimprof.analyzer.sink import AnalysisResult

__all__ = ["AnalysisResult", "analyze_capture", "analyze_run", "decode_capture"]
